//! Who runs what: the engine's in-flight counts, and the RAII slot that keeps them honest.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::model::Task;
use crate::store::Fence;

#[derive(Debug, Default)]
pub(super) struct InFlight {
    pub(super) total: usize,
    pub(super) per_target: HashMap<String, usize>,
    pub(super) running: HashMap<String, (Fence, CancellationToken)>,
    /// Targets whose handler deferred an attempt (breaker open, rate limit), with when they
    /// may go again: their tasks are not claimed before then.
    pub(super) held: HashMap<String, DateTime<Utc>>,
    /// Attempts dropped unfinished on shutdown (aborted past the grace period): their leases
    /// are released so the next start picks them up at once.
    pub(super) abandoned: Vec<Fence>,
}

impl InFlight {
    /// The targets not to claim now: at their concurrency cap, or held until later (expired
    /// holds are dropped). With the earliest end of a hold, if any.
    pub(super) fn skipped_targets(
        &mut self,
        per_target_cap: usize,
        now: DateTime<Utc>,
    ) -> (Vec<String>, Option<DateTime<Utc>>) {
        self.held.retain(|_, until| *until > now);
        let mut skip: Vec<String> = self
            .per_target
            .iter()
            .filter(|(_, n)| **n >= per_target_cap)
            .map(|(k, _)| k.clone())
            .collect();
        for target in self.held.keys() {
            if !skip.contains(target) {
                skip.push(target.clone());
            }
        }
        (skip, self.held.values().min().copied())
    }

    /// Whether `target` has no free slot under `cap`.
    pub(super) fn target_full(&self, target: Option<&str>, cap: usize) -> bool {
        target.is_some_and(|t| self.per_target.get(t).copied().unwrap_or(0) >= cap)
    }
}

/// One attempt's share of the pool and of its target's cap, from claim to the end of the
/// attempt. Given back on drop, so an attempt that panics or is aborted cannot leak its slot
/// (a leaked slot is gone for good: the pool shrinks until the process restarts).
pub(super) struct Slot {
    inner: Arc<Inner>,
    fence: Fence,
    target: Option<String>,
    finished: bool,
}

impl Slot {
    /// Takes a slot for `task`, whose handler stops when `token` fires.
    pub(super) fn take(inner: &Arc<Inner>, task: &Task, token: CancellationToken) -> Slot {
        let fence = Fence::of(task);
        {
            let mut f = inner.in_flight.lock();
            f.total += 1;
            if let Some(t) = &task.target {
                *f.per_target.entry(t.clone()).or_default() += 1;
            }
            f.running.insert(task.id.clone(), (fence.clone(), token));
        }
        Slot {
            inner: inner.clone(),
            fence,
            target: task.target.clone(),
            finished: false,
        }
    }

    /// The attempt ran to its end (its outcome is recorded or it was given back).
    pub(super) fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut f = self.inner.in_flight.lock();
        f.total = f.total.saturating_sub(1);
        if let Some(t) = &self.target
            && let Some(n) = f.per_target.get_mut(t)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                f.per_target.remove(t);
            }
        }
        f.running.remove(&self.fence.task_id);
        if !self.finished {
            if std::thread::panicking() {
                tracing::error!(
                    task_id = %self.fence.task_id,
                    "the attempt panicked; its lease will expire and it will be retried"
                );
            } else {
                f.abandoned.push(self.fence.clone());
            }
        }
        drop(f);
        self.inner.slot_freed.notify_one();
    }
}
