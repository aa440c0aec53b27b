//! A task's deliveries: its status as a whole and per delivery, cancel and retry of the whole
//! task or of one delivery, the receivers' callbacks, and listing.

use serde::Serialize;
use workflow_core::{
    AttemptRecord, CallbackRecord, CancelOutcome, EngineError, Page, StoreError, Task, TaskEvent,
    TaskFilter, TaskStatus,
};

use super::WorkflowManager;
use crate::callback::CallbackReport;
use crate::error::{Error, Result};
use crate::payload::{DeliveryPayload, DeliveryRef, MAX_DELIVERIES, delivery_id};

/// A task with its history and its deliveries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStatusView {
    /// The task's first delivery (whose id is the task's).
    pub task: Task,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Its state changes, oldest first.
    pub events: Vec<TaskEvent>,
    /// Every delivery, the first included (one for a task with one target).
    pub deliveries: Vec<DeliveryStatus>,
}

/// One delivery of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryStatus {
    /// The webhook URL, or the channel's name.
    pub target: String,
    /// The delivery's own engine task.
    pub task: Task,
    /// Its attempts, oldest first (empty where only the status was asked for).
    pub attempts: Vec<AttemptRecord>,
}

impl TaskStatusView {
    /// The task's status as a whole: `completed` when every delivery is, `failed` as soon as
    /// one failed for good (the others still finish), else the most active of the others
    /// (`processing`, `retrying`, `pending`); `cancelled` when all ended and one was cancelled.
    pub fn status(&self) -> TaskStatus {
        overall_status(self.deliveries.iter().map(|d| d.task.status))
    }

    /// Whether the task fans out to more than one target.
    pub fn fans_out(&self) -> bool {
        self.deliveries.len() > 1
    }
}

/// See [`TaskStatusView::status`].
pub fn overall_status(statuses: impl IntoIterator<Item = TaskStatus>) -> TaskStatus {
    let statuses: Vec<TaskStatus> = statuses.into_iter().collect();
    let any = |s: TaskStatus| statuses.contains(&s);
    if statuses.iter().all(|s| *s == TaskStatus::Completed) {
        TaskStatus::Completed
    } else if any(TaskStatus::Failed) {
        TaskStatus::Failed
    } else if any(TaskStatus::Processing) {
        TaskStatus::Processing
    } else if any(TaskStatus::Retrying) {
        TaskStatus::Retrying
    } else if any(TaskStatus::Pending) {
        TaskStatus::Pending
    } else {
        TaskStatus::Cancelled
    }
}

/// The deliveries a task's first delivery lists (itself alone for a task with one target).
fn delivery_refs(task: &Task) -> Vec<DeliveryRef> {
    let listed = DeliveryPayload::fanout_of(&task.payload);
    if listed.is_empty() {
        let target = DeliveryPayload::read(&task.payload)
            .map(|p| p.label().to_owned())
            .unwrap_or_default();
        vec![DeliveryRef {
            id: task.id.clone(),
            target,
        }]
    } else {
        listed
    }
}

impl WorkflowManager {
    /// A task with its attempts, events and deliveries, or `None`.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn get_task_status(&self, id: &str) -> Result<Option<TaskStatusView>, EngineError> {
        let store = self.engine.store();
        let Some(task) = store.get(id).await? else {
            return Ok(None);
        };
        let (attempts, events) = tokio::try_join!(store.attempts(id), store.events(id))?;
        let mut deliveries = self.deliveries_of(&task, true).await?;
        // The first delivery's attempts were just read.
        if let Some(first) = deliveries.first_mut()
            && first.task.id == task.id
        {
            first.attempts.clone_from(&attempts);
        }
        Ok(Some(TaskStatusView {
            task,
            attempts,
            events,
            deliveries,
        }))
    }

    /// The deliveries of `task` (a task's first delivery), with their attempts if asked. A
    /// delivery that is gone (pruned) is left out.
    async fn deliveries_of(
        &self,
        task: &Task,
        with_attempts: bool,
    ) -> Result<Vec<DeliveryStatus>, EngineError> {
        let store = self.engine.store();
        let refs = delivery_refs(task);
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let delivery = if r.id == task.id {
                task.clone()
            } else {
                match store.get(&r.id).await? {
                    Some(t) => t,
                    None => continue,
                }
            };
            let attempts = if with_attempts && r.id != task.id {
                store.attempts(&r.id).await?
            } else {
                Vec::new()
            };
            out.push(DeliveryStatus {
                target: r.target,
                task: delivery,
                attempts,
            });
        }
        Ok(out)
    }

    /// The id of task `task_id`'s delivery named `selector` (its id or its target).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDelivery`], or the task is not found, or a store failure.
    pub async fn find_delivery(&self, task_id: &str, selector: &str) -> Result<String> {
        let task = self
            .engine
            .store()
            .get(task_id)
            .await?
            .ok_or_else(|| Error::Engine(StoreError::NotFound(task_id.to_owned()).into()))?;
        delivery_refs(&task)
            .into_iter()
            .find(|r| r.id == selector || r.target == selector)
            .map(|r| r.id)
            .ok_or_else(|| Error::UnknownDelivery(selector.to_owned()))
    }

    /// Cancels every delivery of a task that has not ended: at once if waiting, after its
    /// current attempt if running. The outcome is `AlreadyFinal` only when every delivery had
    /// ended, `Requested` when one is still running, else `Cancelled`; it holds the first
    /// delivery.
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn cancel_task(&self, id: &str) -> Result<CancelOutcome, EngineError> {
        let first = self.engine.cancel(id).await?;
        let task = match &first {
            CancelOutcome::Cancelled(t)
            | CancelOutcome::Requested(t)
            | CancelOutcome::AlreadyFinal(t) => t.clone(),
        };
        let mut ended_before = matches!(first, CancelOutcome::AlreadyFinal(_));
        let mut requested = matches!(first, CancelOutcome::Requested(_));
        for r in delivery_refs(&task).into_iter().skip(1) {
            match self.engine.cancel(&r.id).await {
                Ok(CancelOutcome::AlreadyFinal(_)) => {}
                Ok(CancelOutcome::Requested(_)) => {
                    ended_before = false;
                    requested = true;
                }
                Ok(CancelOutcome::Cancelled(_)) => ended_before = false,
                // Pruned after it ended.
                Err(EngineError::Store(StoreError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(if ended_before {
            CancelOutcome::AlreadyFinal(task)
        } else if requested {
            CancelOutcome::Requested(task)
        } else {
            CancelOutcome::Cancelled(task)
        })
    }

    /// Cancels one delivery of a task (`selector`: its id or target).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDelivery`], not found, or a store failure.
    pub async fn cancel_delivery(&self, id: &str, selector: &str) -> Result<CancelOutcome> {
        let delivery = self.find_delivery(id, selector).await?;
        Ok(self.engine.cancel(&delivery).await?)
    }

    /// Makes every failed (or cancelled) delivery of a task due now, with a fresh attempt
    /// budget; the others go on as they are. Returns the first delivery.
    ///
    /// # Errors
    ///
    /// Not found; no delivery failed or was cancelled (invalid state); a store failure.
    pub async fn retry_task(&self, id: &str) -> Result<Task, EngineError> {
        let store = self.engine.store();
        let task = store
            .get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let deliveries = self.deliveries_of(&task, false).await?;
        let ended_badly = |s: TaskStatus| matches!(s, TaskStatus::Failed | TaskStatus::Cancelled);
        if !deliveries.iter().any(|d| ended_badly(d.task.status)) {
            // The engine's own answer: the invalid state of the task.
            return self.engine.retry_now(id).await;
        }
        let mut first = task;
        for d in deliveries.iter().filter(|d| ended_badly(d.task.status)) {
            let retried = self.engine.retry_now(&d.task.id).await?;
            if retried.id == first.id {
                first = retried;
            }
        }
        Ok(first)
    }

    /// Makes one failed (or cancelled) delivery of a task due now (`selector`: its id or
    /// target).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDelivery`], not found, not failed, or a store failure.
    pub async fn retry_delivery(&self, id: &str, selector: &str) -> Result<Task> {
        let delivery = self.find_delivery(id, selector).await?;
        Ok(self.engine.retry_now(&delivery).await?)
    }

    /// Whether `token` is the callback token of a delivery of task `task_id` (never, without
    /// tokens configured).
    pub fn verify_callback_token(&self, task_id: &str, token: &str) -> bool {
        self.callback_delivery(task_id, token).is_some()
    }

    /// The delivery of task `task_id` whose receiver holds `token`: every delivery carries the
    /// task's callback link and a token of its own, derived from its id, so the answer needs
    /// no lookup.
    pub fn callback_delivery(&self, task_id: &str, token: &str) -> Option<String> {
        let tokens = self.callbacks.as_ref()?;
        (0..MAX_DELIVERIES)
            .map(|n| delivery_id(task_id, n))
            .find(|id| tokens.verify(id, token))
    }

    /// Records what a receiver reports on delivery `delivery_id` (the closed loop; see
    /// [`WorkflowManager::callback_delivery`]); the latest report is shown with the delivery
    /// and the task.
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn record_callback(
        &self,
        delivery_id: &str,
        report: CallbackReport,
    ) -> Result<Task, EngineError> {
        let status = report.status.clone();
        let record = CallbackRecord {
            status: report.status,
            note: report.note,
            at: chrono::Utc::now(),
        };
        let task = self
            .engine
            .store()
            .record_callback(delivery_id, record)
            .await?;
        tracing::info!(task_id = %crate::payload::task_id_of(&task), delivery = %delivery_id, callback_status = %status, "receiver reported back");
        metrics::counter!("dispatcher_callbacks_total", "status" => status).increment(1);
        Ok(task)
    }

    /// Lists tasks (their first deliveries), newest first.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<Page, EngineError> {
        Ok(self.engine.store().list(filter).await?)
    }

    /// Lists tasks, newest first, each with its deliveries (without attempts or events), and
    /// the cursor of the next page.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn list_task_statuses(
        &self,
        filter: &TaskFilter,
    ) -> Result<(Vec<TaskStatusView>, Option<i64>), EngineError> {
        let page = self.list_tasks(filter).await?;
        let mut out = Vec::with_capacity(page.tasks.len());
        for task in page.tasks {
            let deliveries = self.deliveries_of(&task, false).await?;
            out.push(TaskStatusView {
                task,
                attempts: Vec::new(),
                events: Vec::new(),
                deliveries,
            });
        }
        Ok((out, page.next_cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn a_task_is_as_far_as_its_deliveries() {
        assert_eq!(overall_status([Completed, Completed]), Completed);
        assert_eq!(overall_status([Completed, Failed, Processing]), Failed);
        assert_eq!(
            overall_status([Completed, Retrying, Processing]),
            Processing
        );
        assert_eq!(overall_status([Pending, Retrying]), Retrying);
        assert_eq!(overall_status([Completed, Pending]), Pending);
        assert_eq!(overall_status([Completed, Cancelled]), Cancelled);
    }
}
