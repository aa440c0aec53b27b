//! The process-wide Prometheus recorder and its upkeep task.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The process-wide Prometheus handle. The first call builds the recorder (histograms with
/// `buckets`, in seconds; empty for summaries) and installs it as the global `metrics`
/// recorder; later calls (several services in one test process) share it and ignore their
/// `buckets`. If another recorder was installed first, the handle still renders, but only
/// what it sees.
pub fn prometheus(buckets: &[f64]) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            if !buckets.is_empty() {
                builder = builder
                    .set_buckets(buckets)
                    .unwrap_or_else(|_| PrometheusBuilder::new());
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// The task that drains histogram buffers every few seconds even if nobody scrapes (else they
/// grow). Owned by the service that starts it: [`MetricsUpkeep::stop`] ends and joins it.
#[derive(Debug)]
pub struct MetricsUpkeep {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl MetricsUpkeep {
    /// Starts upkeep of `handle` every `every`. Must be called inside a tokio runtime.
    pub fn start(handle: PrometheusHandle, every: Duration) -> MetricsUpkeep {
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => handle.run_upkeep(),
                    () = cancelled.cancelled() => break,
                }
            }
        });
        MetricsUpkeep { stop, task }
    }

    /// Stops the task and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
