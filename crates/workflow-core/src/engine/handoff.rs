//! New tasks handed straight to free workers.
//!
//! When this engine has free slots and the store holds no due work waiting for one, a new task
//! is stored already claimed by this engine ([`Store::enqueue_claimed`]) and its attempt starts
//! at once: no wakeup of the claim loop, no claim query, no second write. The lease makes it as
//! safe as a claim: if the process dies, the task is claimed again when the lease expires (at
//! once on SQLite, which recovers leases on open). SQLite and PostgreSQL claim on insert.
//! Otherwise (no free slot, a target at its cap or held back, a task due later, or due work
//! already waiting in the store, which must not be overtaken) the task is stored unclaimed and
//! the claim loop takes it in priority order.

use std::sync::Arc;

use super::attempt::spawn_attempt;
use super::slots::Slot;
use super::{Inner, created};
use crate::error::StoreError;
use crate::model::{NewTask, Task, TaskStatus};
use crate::store::{EnqueueLimits, Enqueued, Fence, Release};

/// Stores `tasks` (one call to [`Store::enqueue`] when `single`, else one batch) and runs
/// those it could claim on insert. Answers as the store did.
pub(super) async fn enqueue(
    inner: &Arc<Inner>,
    mut tasks: Vec<NewTask>,
    single: bool,
) -> Result<Vec<Enqueued>, StoreError> {
    let limits = EnqueueLimits {
        max_active: inner.config.task_queue_size,
    };
    let now = inner.clock.now();
    let reserved = if !inner.stop_claiming.is_cancelled() && tasks.iter().all(|t| t.run_at <= now) {
        let keys: Vec<_> = tasks
            .iter()
            .map(|t| (t.id.clone(), t.target.clone()))
            .collect();
        Slot::reserve(inner, &keys, now)
    } else {
        None
    };
    let Some(reserved) = reserved else {
        let out = match tasks.pop() {
            Some(task) if single => vec![inner.store.enqueue(task, limits).await?],
            Some(task) => {
                tasks.push(task);
                inner.store.enqueue_batch(tasks, limits).await?
            }
            None => Vec::new(),
        };
        if out.iter().any(|e| matches!(e, Enqueued::Created(_))) {
            inner.in_flight.lock().backlog += 1;
        }
        for e in &out {
            if let Enqueued::Created(t) = e {
                created(inner, t);
            }
        }
        return Ok(out);
    };
    let stored = inner
        .store
        .enqueue_claimed(
            tasks,
            limits,
            &inner.config.owner_id,
            now,
            inner.config.lease,
        )
        .await;
    let out = match stored {
        Ok(out) => out,
        Err(e) => {
            for (slot, _) in reserved {
                slot.finish();
            }
            return Err(e);
        }
    };
    for e in &out {
        if let Enqueued::Created(t) = e {
            created(inner, t);
        }
    }
    let mut unclaimed = false;
    let mut closed = Vec::new();
    {
        let mut attempts = inner.attempts.lock();
        for ((slot, token), e) in reserved.into_iter().zip(&out) {
            match e {
                Enqueued::Created(t) if claimed_by(t, &inner.config.owner_id) => {
                    match attempts.as_mut() {
                        Some(set) => spawn_attempt(inner, set, t.clone(), slot, token),
                        None => {
                            // The engine drained its attempts while this insert ran.
                            slot.finish();
                            closed.push(Fence::of(t));
                        }
                    }
                }
                // A store without claim on insert stored it for the claim loop.
                Enqueued::Created(_) => {
                    unclaimed = true;
                    slot.finish();
                }
                Enqueued::Existing(_) => slot.finish(),
            }
        }
    }
    if unclaimed {
        inner.in_flight.lock().backlog += 1;
        inner.store.wakeup().notify_one();
    }
    for fence in closed {
        let now = inner.clock.now();
        let release = Release {
            at: now,
            reason: "released on shutdown".to_owned(),
        };
        if let Err(e) = inner.store.release(&fence, release, now).await {
            tracing::warn!(task_id = %fence.task_id, error = %e, "could not release a task created during shutdown; its lease will expire");
        }
    }
    Ok(out)
}

fn claimed_by(t: &Task, owner: &str) -> bool {
    t.status == TaskStatus::Processing && t.attempt == 1 && t.lease_owner.as_deref() == Some(owner)
}
