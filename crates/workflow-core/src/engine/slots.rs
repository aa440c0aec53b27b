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
    /// Bumped whenever tasks were stored unclaimed: the store may hold due work this engine
    /// has not claimed yet.
    pub(super) backlog: u64,
    /// The `backlog` generation up to which a claim round found nothing more to claim. New
    /// tasks go straight to free workers only while `drained == backlog`, so they never
    /// overtake due tasks of a higher priority waiting in the store.
    pub(super) drained: u64,
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

    /// Whether `target` is held back by a deferral at `now`.
    pub(super) fn target_held(&self, target: Option<&str>, now: DateTime<Utc>) -> bool {
        target.is_some_and(|t| self.held.get(t).is_some_and(|until| *until > now))
    }

    /// Counts a slot for `fence`'s task on `target`.
    fn add(&mut self, fence: &Fence, target: Option<&String>, token: CancellationToken) {
        self.total += 1;
        if let Some(t) = target {
            *self.per_target.entry(t.clone()).or_default() += 1;
        }
        self.running
            .insert(fence.task_id.clone(), (fence.clone(), token));
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
    /// Takes a slot for a claimed `task`, whose handler stops when `token` fires.
    pub(super) fn take(inner: &Arc<Inner>, task: &Task, token: CancellationToken) -> Slot {
        let fence = Fence::of(task);
        inner
            .in_flight
            .lock()
            .add(&fence, task.target.as_ref(), token);
        Slot::new(inner, fence, task.target.clone())
    }

    /// Takes slots for tasks not stored yet, which the store will claim for `owner` as it
    /// inserts them ([`Store::enqueue_claimed`](crate::Store::enqueue_claimed)): all of them,
    /// each with its cancel token, or none when the pool or a target's cap has no room, a
    /// target is held, or the store may hold due work waiting for a slot (`backlog`).
    pub(super) fn reserve(
        inner: &Arc<Inner>,
        tasks: &[(String, Option<String>)],
        now: DateTime<Utc>,
    ) -> Option<Vec<(Slot, CancellationToken)>> {
        let config = &inner.config;
        let mut f = inner.in_flight.lock();
        if f.drained != f.backlog || f.total + tasks.len() > config.max_in_flight {
            return None;
        }
        let mut per_target: HashMap<&str, usize> = HashMap::new();
        for (_, target) in tasks {
            if let Some(t) = target.as_deref() {
                let n = per_target.entry(t).or_default();
                *n += 1;
                let running = f.per_target.get(t).copied().unwrap_or(0);
                if running + *n > config.per_target_in_flight || f.target_held(Some(t), now) {
                    return None;
                }
            }
        }
        let slots = tasks
            .iter()
            .map(|(id, target)| {
                let fence = Fence {
                    task_id: id.clone(),
                    attempt: 1,
                    owner: config.owner_id.clone(),
                };
                let token = inner.hard_stop.child_token();
                f.add(&fence, target.as_ref(), token.clone());
                (Slot::new(inner, fence, target.clone()), token)
            })
            .collect();
        Some(slots)
    }

    fn new(inner: &Arc<Inner>, fence: Fence, target: Option<String>) -> Slot {
        Slot {
            inner: inner.clone(),
            fence,
            target,
            finished: false,
        }
    }

    /// The attempt ran to its end (its outcome is recorded or it was given back), or a
    /// reserved slot was not needed.
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
