//! The state transitions every backend applies, as pure functions on a [`Task`], so the
//! backends differ only in how they find and persist rows, never in the rules.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Task, TaskEvent, TaskStatus};
use crate::store::{CancelOutcome, Completion, Fence, Release};

/// Every stored instant has millisecond precision (SQLite stores integer milliseconds), so a
/// task returned by a write equals the task read back, in every backend.
pub(crate) fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

pub(crate) fn event(
    task: &Task,
    from: Option<TaskStatus>,
    at: DateTime<Utc>,
    reason: &str,
) -> TaskEvent {
    TaskEvent {
        task_id: task.id.clone(),
        at: ms(at),
        from,
        to: task.status,
        reason: reason.to_owned(),
    }
}

/// A new row from a [`NewTask`], and its `created` event.
pub(crate) fn create(new: NewTask, seq: i64, now: DateTime<Utc>) -> (Task, TaskEvent) {
    let now = ms(now);
    let task = Task {
        id: new.id,
        kind: new.kind,
        priority: new.priority,
        status: TaskStatus::Pending,
        payload: new.payload,
        target: new.target,
        attempt: 0,
        tries: 0,
        max_attempts: new.max_attempts.max(1),
        next_run_at: Some(ms(new.run_at)),
        lease_owner: None,
        lease_until: None,
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        finished_at: None,
        last_error: None,
        result: None,
        idempotency_key: new.idempotency_key,
        callback: None,
        seq,
    };
    let ev = event(&task, None, now, "created");
    (task, ev)
}

/// Claims a task for `owner`.
pub(crate) fn claim(
    task: &mut Task,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> TaskEvent {
    let now = ms(now);
    let from = task.status;
    let reason = if from == TaskStatus::Processing {
        "lease expired; reclaimed"
    } else {
        "claimed"
    };
    task.status = TaskStatus::Processing;
    task.attempt += 1;
    task.lease_owner = Some(owner.to_owned());
    task.lease_until =
        Some(now + chrono::Duration::from_std(lease).unwrap_or(chrono::TimeDelta::MAX));
    task.next_run_at = None;
    task.updated_at = now;
    event(task, Some(from), now, reason)
}

/// The fence check: the claim that wrote `fence` still owns the task.
pub(crate) fn check_fence(task: &Task, fence: &Fence) -> Result<(), StoreError> {
    if task.status == TaskStatus::Processing
        && task.attempt == fence.attempt
        && task.lease_owner.as_deref() == Some(fence.owner.as_str())
    {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            task_id: task.id.clone(),
            attempt: fence.attempt,
        })
    }
}

fn finish(task: &mut Task, status: TaskStatus, now: DateTime<Utc>) {
    let now = ms(now);
    task.status = status;
    task.lease_owner = None;
    task.lease_until = None;
    task.updated_at = now;
    if status.is_final() {
        task.next_run_at = None;
        task.finished_at = Some(now);
    }
}

/// Ends a claimed turn with an attempt record. The caller has checked the fence.
pub(crate) fn finish_attempt(
    task: &mut Task,
    attempt: &mut AttemptRecord,
    completion: Completion,
    now: DateTime<Utc>,
) -> TaskEvent {
    task.tries += 1;
    attempt.n = task.tries;
    attempt.started_at = ms(attempt.started_at);
    attempt.task_id = task.id.clone();
    let from = task.status;
    let reason = match completion {
        Completion::Succeeded { result } => {
            task.result = result;
            task.last_error = None;
            finish(task, TaskStatus::Completed, now);
            "delivered".to_owned()
        }
        Completion::Retry { at, error } => {
            task.last_error = Some(error);
            if task.cancel_requested {
                finish(task, TaskStatus::Cancelled, now);
                "cancelled by user".to_owned()
            } else {
                finish(task, TaskStatus::Retrying, now);
                task.next_run_at = Some(ms(at));
                format!("retry scheduled for {}", at.to_rfc3339())
            }
        }
        Completion::Failed { error } => {
            let reason = format!("failed: {error}");
            task.last_error = Some(error);
            if task.cancel_requested {
                finish(task, TaskStatus::Cancelled, now);
                "cancelled by user".to_owned()
            } else {
                finish(task, TaskStatus::Failed, now);
                reason
            }
        }
    };
    event(task, Some(from), now, &reason)
}

/// Gives a claimed task back without spending an attempt. The caller has checked the fence.
pub(crate) fn release(task: &mut Task, release: &Release, now: DateTime<Utc>) -> TaskEvent {
    let from = task.status;
    if task.cancel_requested {
        finish(task, TaskStatus::Cancelled, now);
        return event(task, Some(from), now, "cancelled by user");
    }
    let status = if task.tries == 0 {
        TaskStatus::Pending
    } else {
        TaskStatus::Retrying
    };
    finish(task, status, now);
    task.next_run_at = Some(ms(release.at));
    event(task, Some(from), now, &release.reason)
}

/// Cancels a task (at once unless processing).
pub(crate) fn cancel(
    task: &mut Task,
    reason: &str,
    now: DateTime<Utc>,
) -> (CancelOutcome, Option<TaskEvent>) {
    match task.status {
        s if s.is_final() => (CancelOutcome::AlreadyFinal(task.clone()), None),
        TaskStatus::Processing => {
            task.cancel_requested = true;
            task.updated_at = ms(now);
            (CancelOutcome::Requested(task.clone()), None)
        }
        from => {
            finish(task, TaskStatus::Cancelled, now);
            let ev = event(task, Some(from), now, reason);
            (CancelOutcome::Cancelled(task.clone()), Some(ev))
        }
    }
}

/// Makes a failed or cancelled task due now with a fresh attempt budget.
pub(crate) fn retry_now(task: &mut Task, now: DateTime<Utc>) -> Result<TaskEvent, StoreError> {
    if !matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled) {
        return Err(StoreError::InvalidState {
            task_id: task.id.clone(),
            status: task.status,
            message: "only failed or cancelled tasks can be retried".to_owned(),
        });
    }
    let now = ms(now);
    let from = task.status;
    task.status = TaskStatus::Pending;
    // A fresh budget of attempts; `tries` keeps counting so attempt numbers stay unique.
    task.max_attempts = task.tries.saturating_add(task.max_attempts.max(1));
    task.cancel_requested = false;
    task.next_run_at = Some(now);
    task.finished_at = None;
    task.updated_at = now;
    Ok(event(task, Some(from), now, "retry requested"))
}

/// Extends a claim's lease. The caller has checked the fence.
pub(crate) fn extend_lease(task: &mut Task, until: DateTime<Utc>) {
    task.lease_until = Some(ms(until));
}

/// Stores the receiver's latest report.
/// Stores the receiver's latest report, and returns the event that keeps it in the history
/// (status unchanged; reason `callback: <status>[: <note>]`).
pub(crate) fn record_callback(task: &mut Task, mut callback: CallbackRecord) -> TaskEvent {
    callback.at = ms(callback.at);
    task.updated_at = callback.at;
    let reason = match &callback.note {
        Some(note) => format!("callback: {}: {note}", callback.status),
        None => format!("callback: {}", callback.status),
    };
    let ev = event(task, Some(task.status), callback.at, &reason);
    task.callback = Some(callback);
    ev
}
