//! One attempt: run the handler under a heartbeat that keeps its lease, then decide what its
//! outcome means and write it fenced by the claim.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::slots::Slot;
use super::{Inner, status_changed};
use crate::error::StoreError;
use crate::events::EngineEvent;
use crate::handler::{AttemptContext, AttemptResult, HandlerOutcome};
use crate::model::{AttemptRecord, Task, TaskStatus};
use crate::outcome::{Attempted, Decision, decide};
use crate::store::{Completion, Fence, Release};

/// The slot and cancel token of a task the claim loop claimed.
pub(super) fn claimed_slot(inner: &Arc<Inner>, task: &Task) -> (Slot, CancellationToken) {
    let token = inner.hard_stop.child_token();
    if task.cancel_requested {
        // Reclaimed after its worker died while a cancel was pending: stop at once.
        token.cancel();
    }
    (Slot::take(inner, task, token.clone()), token)
}

/// Runs `task` in its slot, owned by `attempts` so shutdown can drain it.
pub(super) fn spawn_attempt(
    inner: &Arc<Inner>,
    attempts: &mut JoinSet<()>,
    task: Task,
    slot: Slot,
    token: CancellationToken,
) {
    let inner = inner.clone();
    attempts.spawn(async move {
        run_attempt(&inner, task, token).await;
        slot.finish();
    });
}

async fn run_attempt(inner: &Arc<Inner>, task: Task, token: CancellationToken) {
    let fence = Fence::of(&task);
    let attempt_no = task.tries + 1;
    let from_status = if task.tries == 0 {
        TaskStatus::Pending
    } else {
        TaskStatus::Retrying
    };
    status_changed(inner, &task.id, from_status, TaskStatus::Processing);
    tracing::info!(task_id = %task.id, attempt = attempt_no, target = task.target.as_deref().unwrap_or(""), "task dispatched");
    let _ = inner.events.send(EngineEvent::Dispatched {
        task_id: task.id.clone(),
        attempt: attempt_no,
    });
    let Some(handler) = inner.handlers.get(&task.kind).cloned() else {
        let outcome =
            HandlerOutcome::permanent(format!("no handler for task kind {:?}", task.kind));
        let attempted = Attempted {
            started_at: inner.clock.now(),
            elapsed: Duration::ZERO,
            cancelled: false,
            now: inner.clock.now(),
        };
        record(inner, &task, &fence, outcome, attempted).await;
        return;
    };
    let ctx = AttemptContext {
        attempt: attempt_no,
        cancel: token.clone(),
    };
    let started_at = inner.clock.now();
    let started = tokio::time::Instant::now();
    // A panicking handler is a failed attempt like any other: recorded, retried within the
    // task's budget (so a task that always panics ends failed instead of looping on lease
    // expiry), and its slot given back.
    let work = AssertUnwindSafe(handler.handle(&task, ctx)).catch_unwind();
    tokio::pin!(work);
    // Long handlers keep their lease alive; losing it means another worker owns the task.
    let period = (inner.config.lease / 3).max(Duration::from_millis(50));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let outcome = loop {
        tokio::select! {
            out = &mut work => break out.unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task_id = %task.id, panic = %why, "the handler panicked");
                HandlerOutcome::retryable(format!("handler panicked: {why}"))
            }),
            _ = heartbeat.tick() => {
                let until = inner.clock.now() + chrono::Duration::from_std(inner.config.lease).unwrap_or(chrono::TimeDelta::MAX);
                match inner.store.extend_lease(&fence, until).await {
                    Ok(()) => {
                        // A cancel asked through another instance (or the store directly)
                        // reaches the handler within a third of the lease.
                        if !token.is_cancelled()
                            && let Ok(Some(t)) = inner.store.get(&task.id).await
                            && t.cancel_requested
                        {
                            tracing::info!(task_id = %task.id, "cancel requested; stopping the handler");
                            token.cancel();
                        }
                    }
                    Err(e) if e.is_fenced() => {
                        tracing::warn!(task_id = %task.id, "lease lost while running; abandoning the attempt");
                        token.cancel();
                        metrics::counter!("workflow_fenced_writes_total").increment(1);
                        let _ = inner.events.send(EngineEvent::Fenced { task_id: task.id.clone(), attempt: fence.attempt });
                        return;
                    }
                    Err(e) => tracing::warn!(task_id = %task.id, error = %e, "could not extend lease"),
                }
            }
        }
    };
    let elapsed = started.elapsed();
    if inner.hard_stop.is_cancelled() && !matches!(outcome.result, AttemptResult::Success(_)) {
        // Stopped by shutdown, not by the target: give the task back without spending a try.
        let now = inner.clock.now();
        let release = Release {
            at: now,
            reason: "released on shutdown".to_owned(),
        };
        match inner.store.release(&fence, release, now).await {
            Ok(_) => tracing::info!(task_id = %task.id, "lease released on shutdown"),
            Err(e) => fenced_or_failed(inner, &task, &fence, &e),
        }
        return;
    }
    // Past the shutdown check, a fired token means a user cancel.
    let attempted = Attempted {
        started_at,
        elapsed,
        cancelled: token.is_cancelled(),
        now: inner.clock.now(),
    };
    record(inner, &task, &fence, outcome, attempted).await;
}

/// Decides what the outcome means ([`decide`]), says so (log, event, metrics) and writes it.
async fn record(
    inner: &Arc<Inner>,
    task: &Task,
    fence: &Fence,
    outcome: HandlerOutcome,
    attempted: Attempted,
) {
    metrics::histogram!("workflow_attempt_duration_seconds")
        .record(attempted.elapsed.as_secs_f64());
    let now = attempted.now;
    let decision = decide(
        task,
        outcome,
        attempted,
        &inner.config.backoff,
        &mut rand::rng(),
    );
    let written = match decision {
        Decision::Defer {
            until,
            reason,
            hold_target,
        } => {
            deferred(inner, task, until, &reason, hold_target);
            inner
                .store
                .release(fence, Release { at: until, reason }, now)
                .await
        }
        Decision::Finish {
            attempt,
            completion,
        } => {
            finished(inner, task, &attempt, &completion, now);
            inner
                .store
                .finish_attempt(fence, attempt, completion, now)
                .await
        }
    };
    match written {
        Ok(t) => status_changed(inner, &t.id, TaskStatus::Processing, t.status),
        Err(e) => fenced_or_failed(inner, task, fence, &e),
    }
}

/// Says that `task` was deferred until `until`, and holds its target if the reason speaks
/// for all of it.
fn deferred(inner: &Inner, task: &Task, until: DateTime<Utc>, reason: &str, hold_target: bool) {
    tracing::info!(task_id = %task.id, %until, reason = %reason, "attempt deferred");
    let _ = inner.events.send(EngineEvent::Deferred {
        task_id: task.id.clone(),
        until,
        reason: reason.to_owned(),
    });
    metrics::counter!("workflow_attempts_total", "outcome" => "deferred").increment(1);
    if let Some(target) = task.target.as_ref().filter(|_| hold_target) {
        // Whatever deferred this task (the target's breaker, its rate limit) holds every task
        // of the target: leave them unclaimed until then, instead of claiming and giving back
        // each due one (a write and an event apiece, over and over while a failing target's
        // breaker stays open).
        let mut f = inner.in_flight.lock();
        let end = f.held.entry(target.clone()).or_insert(until);
        *end = (*end).max(until);
    }
}

/// Says how an attempt ended and what comes next.
fn finished(
    inner: &Inner,
    task: &Task,
    attempt: &AttemptRecord,
    completion: &Completion,
    now: DateTime<Utc>,
) {
    metrics::counter!("workflow_attempts_total", "outcome" => attempt.outcome.clone()).increment(1);
    let n = attempt.n;
    match completion {
        Completion::Succeeded { .. } => {
            tracing::info!(task_id = %task.id, attempt = n, status = ?attempt.status_code, duration_ms = attempt.duration_ms, "attempt succeeded");
            let _ = inner.events.send(EngineEvent::Succeeded {
                task_id: task.id.clone(),
                attempt: n,
                status_code: attempt.status_code,
                duration_ms: attempt.duration_ms,
            });
            let latency = (now - task.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("workflow_delivery_latency_seconds").record(latency);
        }
        Completion::Retry { error, .. } | Completion::Failed { error } => {
            let will_retry = matches!(completion, Completion::Retry { .. });
            tracing::warn!(task_id = %task.id, attempt = n, status = ?attempt.status_code, error = %error, will_retry, "attempt failed");
            let _ = inner.events.send(EngineEvent::Failed {
                task_id: task.id.clone(),
                attempt: n,
                status_code: attempt.status_code,
                error: error.clone(),
                will_retry,
            });
        }
    }
    if let Completion::Retry { at, .. } = completion {
        let delay_ms = (*at - now).num_milliseconds().max(0) as u64;
        tracing::info!(task_id = %task.id, retry_at = %at, delay_ms, "retry scheduled");
        let _ = inner.events.send(EngineEvent::RetryScheduled {
            task_id: task.id.clone(),
            at: *at,
            delay_ms,
        });
    }
}

fn fenced_or_failed(inner: &Inner, task: &Task, fence: &Fence, e: &StoreError) {
    if e.is_fenced() {
        metrics::counter!("workflow_fenced_writes_total").increment(1);
        tracing::warn!(task_id = %task.id, attempt = fence.attempt, "stale write rejected: another worker owns the task");
        let _ = inner.events.send(EngineEvent::Fenced {
            task_id: task.id.clone(),
            attempt: fence.attempt,
        });
    } else {
        tracing::error!(task_id = %task.id, error = %e, "could not record the attempt; the lease will expire and it will be retried");
    }
}
