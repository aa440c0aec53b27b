//! Per-second counts of what this instance's engine did, for the overview's live charts.
//!
//! The store knows how many tasks are in each state, not how fast they move; Prometheus
//! knows the rates but its text is for scrapers. The engine's event stream is the one place
//! that sees every creation and attempt as it happens, so a small collector counts them into
//! a ring of one-second buckets. With several instances on one PostgreSQL database each
//! dashboard shows its own instance's rates (the counts by status are the database's).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use workflow_core::{Engine, EngineEvent};

/// How many seconds of history the collector keeps (the chart shows them all).
pub const WINDOW_SECS: usize = 120;

/// Latency samples kept per second (a burst beyond this is sampled by its first ones).
const SAMPLES_PER_SEC: usize = 256;

#[derive(Debug, Default, Clone)]
struct Bucket {
    sec: i64,
    created: u64,
    delivered: u64,
    failed: u64,
    retries: u64,
    latencies_ms: Vec<u64>,
}

/// One second of the chart.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Point {
    /// Unix second.
    pub t: i64,
    /// Tasks accepted.
    pub created: u64,
    /// Attempts that succeeded.
    pub delivered: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Retries scheduled.
    pub retries: u64,
}

/// The collector's view of the last [`WINDOW_SECS`] seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rates {
    /// One point per second, oldest first, gaps filled with zeros.
    pub series: Vec<Point>,
    /// Tasks accepted per second over the last 10 s.
    pub created_per_sec: f64,
    /// Successful deliveries per second over the last 10 s.
    pub delivered_per_sec: f64,
    /// Median delivery latency over the last 60 s, if any delivery succeeded.
    pub latency_p50_ms: Option<u64>,
    /// 95th percentile of the same.
    pub latency_p95_ms: Option<u64>,
    /// Failed attempts over the last 60 s.
    pub failed_last_min: u64,
    /// Retries scheduled over the last 60 s.
    pub retries_last_min: u64,
}

/// Counts engine events into one-second buckets; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    buckets: Arc<Mutex<VecDeque<Bucket>>>,
}

impl Stats {
    /// A collector following `engine`'s events until the engine is dropped.
    pub fn follow(engine: &Engine) -> Stats {
        let stats = Stats::default();
        let mut events = engine.subscribe();
        let collector = stats.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => collector.record(&event, chrono::Utc::now().timestamp()),
                    // A burst outran the dashboard: the chart misses some events, nothing else does.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                }
            }
        });
        stats
    }

    /// Counts one event at unix second `now`.
    pub fn record(&self, event: &EngineEvent, now: i64) {
        let mut buckets = self.buckets.lock().expect("stats lock");
        if buckets.back().is_none_or(|b| b.sec < now) {
            buckets.push_back(Bucket {
                sec: now,
                ..Bucket::default()
            });
            while buckets
                .front()
                .is_some_and(|b| b.sec <= now - WINDOW_SECS as i64)
            {
                buckets.pop_front();
            }
        }
        // Events arrive in order; one stamped in an earlier second (clock step) joins the newest.
        let bucket = buckets.back_mut().expect("just pushed");
        match event {
            EngineEvent::Created { .. } => bucket.created += 1,
            EngineEvent::Succeeded { duration_ms, .. } => {
                bucket.delivered += 1;
                if bucket.latencies_ms.len() < SAMPLES_PER_SEC {
                    bucket.latencies_ms.push(*duration_ms);
                }
            }
            EngineEvent::Failed { .. } => bucket.failed += 1,
            EngineEvent::RetryScheduled { .. } => bucket.retries += 1,
            _ => {}
        }
    }

    /// The last [`WINDOW_SECS`] seconds up to unix second `now`.
    pub fn rates(&self, now: i64) -> Rates {
        let buckets = self.buckets.lock().expect("stats lock");
        let start = now - WINDOW_SECS as i64 + 1;
        let mut series: Vec<Point> = (start..=now)
            .map(|t| Point {
                t,
                created: 0,
                delivered: 0,
                failed: 0,
                retries: 0,
            })
            .collect();
        let mut latencies = Vec::new();
        for b in buckets.iter().filter(|b| b.sec >= start && b.sec <= now) {
            let p = &mut series[(b.sec - start) as usize];
            p.created = b.created;
            p.delivered = b.delivered;
            p.failed = b.failed;
            p.retries = b.retries;
            if b.sec > now - 60 {
                latencies.extend_from_slice(&b.latencies_ms);
            }
        }
        latencies.sort_unstable();
        let quantile = |q: f64| {
            (!latencies.is_empty())
                .then(|| latencies[((latencies.len() - 1) as f64 * q).round() as usize])
        };
        let last = |n: usize| &series[series.len() - n..];
        let per_sec = |f: fn(&Point) -> u64| last(10).iter().map(f).sum::<u64>() as f64 / 10.0;
        Rates {
            created_per_sec: per_sec(|p| p.created),
            delivered_per_sec: per_sec(|p| p.delivered),
            latency_p50_ms: quantile(0.5),
            latency_p95_ms: quantile(0.95),
            failed_last_min: last(60).iter().map(|p| p.failed).sum(),
            retries_last_min: last(60).iter().map(|p| p.retries).sum(),
            series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use workflow_core::Priority;

    fn created() -> EngineEvent {
        EngineEvent::Created {
            task_id: "t".into(),
            priority: Priority::High,
        }
    }

    fn succeeded(ms: u64) -> EngineEvent {
        EngineEvent::Succeeded {
            task_id: "t".into(),
            attempt: 1,
            status_code: Some(200),
            duration_ms: ms,
        }
    }

    #[test]
    fn events_land_in_their_second_and_old_seconds_fall_out() {
        let stats = Stats::default();
        stats.record(&created(), 1_000);
        stats.record(&created(), 1_000);
        stats.record(&succeeded(5), 1_001);
        stats.record(&succeeded(15), 1_001);
        stats.record(&succeeded(25), 1_001);
        let r = stats.rates(1_001);
        assert_eq!(r.series.len(), WINDOW_SECS);
        assert_eq!(r.series[WINDOW_SECS - 2].created, 2);
        assert_eq!(r.series[WINDOW_SECS - 1].delivered, 3);
        assert_eq!(r.created_per_sec, 0.2);
        assert_eq!(r.delivered_per_sec, 0.3);
        assert_eq!(r.latency_p50_ms, Some(15));
        assert_eq!(r.latency_p95_ms, Some(25));

        // Two minutes later nothing of it is left, in the series or in memory.
        stats.record(&created(), 1_200);
        let r = stats.rates(1_200);
        assert_eq!(r.series.iter().map(|p| p.created).sum::<u64>(), 1);
        assert_eq!(r.latency_p50_ms, None);
        assert_eq!(stats.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn failures_and_retries_count_over_the_last_minute() {
        let stats = Stats::default();
        for s in [100, 130, 159] {
            stats.record(
                &EngineEvent::Failed {
                    task_id: "t".into(),
                    attempt: 1,
                    status_code: Some(500),
                    error: "HTTP 500".into(),
                    will_retry: true,
                },
                s,
            );
            stats.record(
                &EngineEvent::RetryScheduled {
                    task_id: "t".into(),
                    at: chrono::Utc::now(),
                    delay_ms: 1,
                },
                s,
            );
        }
        let r = stats.rates(160);
        assert_eq!((r.failed_last_min, r.retries_last_min), (2, 2));
    }
}
