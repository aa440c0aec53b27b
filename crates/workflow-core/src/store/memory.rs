//! An in-memory [`Store`]: for tests and for library users who do not need durability.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
use crate::store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, Page, Release, Store,
    StoreResult, TaskFilter,
};
use crate::store::{codec, logic};

type DueKey = (i64, i64, String); // (next_run_at ms, seq, id)

#[derive(Debug, Default)]
struct State {
    tasks: HashMap<String, Task>,
    /// Creation order, for newest-first listing: seq -> id.
    by_seq: BTreeMap<i64, String>,
    /// Due-time index of pending/retrying tasks, one set per priority rank.
    due: [BTreeSet<DueKey>; 4],
    /// Lease index of processing tasks: (lease_until ms, seq, id).
    leases: BTreeSet<DueKey>,
    idempotency: HashMap<String, String>,
    attempts: HashMap<String, Vec<AttemptRecord>>,
    events: HashMap<String, Vec<TaskEvent>>,
    next_seq: i64,
    /// Task counts by status and priority rank (`TaskStatus::ALL` order).
    tally: [[u64; 4]; 6],
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn status_index(s: TaskStatus) -> usize {
    TaskStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl State {
    fn active(&self) -> u64 {
        self.tally[..3].iter().flatten().sum()
    }

    fn count(&mut self, status: TaskStatus, priority: Priority, add: bool) {
        let slot = &mut self.tally[status_index(status)][usize::from(priority.rank())];
        *slot = if add {
            *slot + 1
        } else {
            slot.saturating_sub(1)
        };
    }

    fn unindex(&mut self, task: &Task) {
        match task.status {
            TaskStatus::Pending | TaskStatus::Retrying => {
                if let Some(t) = task.next_run_at {
                    self.due[usize::from(task.priority.rank())].remove(&(
                        ms(t),
                        task.seq,
                        task.id.clone(),
                    ));
                }
            }
            TaskStatus::Processing => {
                if let Some(t) = task.lease_until {
                    self.leases.remove(&(ms(t), task.seq, task.id.clone()));
                }
            }
            _ => {}
        }
    }

    fn index(&mut self, task: &Task) {
        match task.status {
            TaskStatus::Pending | TaskStatus::Retrying => {
                if let Some(t) = task.next_run_at {
                    self.due[usize::from(task.priority.rank())].insert((
                        ms(t),
                        task.seq,
                        task.id.clone(),
                    ));
                }
            }
            TaskStatus::Processing => {
                if let Some(t) = task.lease_until {
                    self.leases.insert((ms(t), task.seq, task.id.clone()));
                }
            }
            _ => {}
        }
    }

    /// Applies `f` to a task, keeping the indexes and the counts right. `f` must leave the
    /// task unchanged when it fails (the `logic` functions check before they change).
    fn update<R>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut Task) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut task = self
            .tasks
            .remove(id)
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        self.unindex(&task);
        let before = task.status;
        let out = f(&mut task);
        if before != task.status {
            self.count(before, task.priority, false);
            self.count(task.status, task.priority, true);
        }
        self.index(&task);
        self.tasks.insert(id.to_owned(), task);
        out
    }

    fn push_event(&mut self, ev: TaskEvent) {
        self.events.entry(ev.task_id.clone()).or_default().push(ev);
    }

    fn insert(
        &mut self,
        new: NewTask,
        limits: EnqueueLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<Enqueued> {
        self.insert_claimed(new, limits, now, None)
    }

    /// Inserts a task, claimed at once for `claim`'s owner and lease when given.
    fn insert_claimed(
        &mut self,
        new: NewTask,
        limits: EnqueueLimits,
        now: DateTime<Utc>,
        claim: Option<(&str, Duration)>,
    ) -> StoreResult<Enqueued> {
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.idempotency.get(key).and_then(|id| self.tasks.get(id))
        {
            return Ok(Enqueued::Existing(existing.clone()));
        }
        if self.tasks.contains_key(&new.id) {
            return Err(StoreError::Duplicate(new.id));
        }
        if let Some(limit) = limits.max_active
            && self.active() >= limit
        {
            return Err(StoreError::QueueFull { limit });
        }
        self.next_seq += 1;
        let (mut task, ev) = logic::create(new, self.next_seq, now);
        let claimed = claim.map(|(owner, lease)| logic::claim(&mut task, owner, now, lease));
        if let Some(key) = &task.idempotency_key {
            self.idempotency.insert(key.clone(), task.id.clone());
        }
        self.index(&task);
        self.count(task.status, task.priority, true);
        self.by_seq.insert(task.seq, task.id.clone());
        self.push_event(ev);
        if let Some(ev) = claimed {
            self.push_event(ev);
        }
        self.tasks.insert(task.id.clone(), task.clone());
        Ok(Enqueued::Created(task))
    }
}

/// An in-memory store. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    wakeup: Arc<Notify>,
}

impl MemoryStore {
    /// [`Store::enqueue_batch`], claiming each created task when `claim` is given.
    fn insert_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
        now: DateTime<Utc>,
        claim: Option<(&str, Duration)>,
    ) -> StoreResult<Vec<Enqueued>> {
        let mut state = self.state.lock();
        // All or nothing: check everything before inserting anything.
        let mut ids = HashSet::new();
        let mut fresh = 0u64;
        for t in &tasks {
            let existing = t
                .idempotency_key
                .as_ref()
                .is_some_and(|k| state.idempotency.contains_key(k));
            if existing {
                continue;
            }
            if state.tasks.contains_key(&t.id) || !ids.insert(t.id.clone()) {
                return Err(StoreError::Duplicate(t.id.clone()));
            }
            fresh += 1;
        }
        if let Some(limit) = limits.max_active
            && fresh > 0
            && state.active() + fresh > limit
        {
            return Err(StoreError::QueueFull { limit });
        }
        let out = tasks
            .into_iter()
            .map(|t| state.insert_claimed(t, EnqueueLimits::default(), now, claim))
            .collect::<StoreResult<Vec<_>>>()?;
        drop(state);
        if claim.is_none() {
            self.wakeup.notify_one();
        }
        Ok(out)
    }

    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn enqueue(&self, task: NewTask, limits: EnqueueLimits) -> StoreResult<Enqueued> {
        let out = self.state.lock().insert(task, limits, Utc::now())?;
        if matches!(out, Enqueued::Created(_)) {
            self.wakeup.notify_one();
        }
        Ok(out)
    }

    async fn enqueue_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>> {
        self.insert_batch(tasks, limits, Utc::now(), None)
    }

    async fn enqueue_claimed(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Vec<Enqueued>> {
        self.insert_batch(tasks, limits, now, Some((owner, lease)))
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
        skip_targets: &[String],
    ) -> StoreResult<Vec<Task>> {
        let mut state = self.state.lock();
        let now_ms = ms(now);
        let skip = |t: &Task| {
            t.target
                .as_ref()
                .is_some_and(|tg| skip_targets.contains(tg))
        };
        // Candidates: (rank, due ms, seq, id), from each priority's due index and expired leases.
        let mut candidates: Vec<(u8, i64, i64, String)> = Vec::new();
        // Ranks in order: once `max` due tasks are found, no later one can make the cut.
        for (rank, set) in state.due.iter().enumerate() {
            for (due, seq, id) in set.iter() {
                if *due > now_ms || candidates.len() >= max {
                    break;
                }
                if state.tasks.get(id).is_some_and(|t| !skip(t)) {
                    candidates.push((rank as u8, *due, *seq, id.clone()));
                }
            }
        }
        for (until, seq, id) in state.leases.iter() {
            if *until > now_ms {
                break;
            }
            if let Some(t) = state.tasks.get(id)
                && !skip(t)
            {
                candidates.push((t.priority.rank(), *until, *seq, id.clone()));
            }
        }
        candidates.sort();
        candidates.truncate(max);
        let mut claimed = Vec::with_capacity(candidates.len());
        for (_, _, _, id) in candidates {
            let ev = state.update(&id, |t| Ok(logic::claim(t, owner, now, lease)))?;
            state.push_event(ev);
            claimed.push(state.tasks[&id].clone());
        }
        Ok(claimed)
    }

    async fn finish_attempt(
        &self,
        fence: &Fence,
        mut attempt: AttemptRecord,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        let mut state = self.state.lock();
        let ev = state.update(&fence.task_id, |t| {
            logic::check_fence(t, fence)?;
            Ok(logic::finish_attempt(t, &mut attempt, completion, now))
        })?;
        state.push_event(ev);
        state
            .attempts
            .entry(fence.task_id.clone())
            .or_default()
            .push(attempt);
        let task = state.tasks[&fence.task_id].clone();
        drop(state);
        if task.status == TaskStatus::Retrying {
            self.wakeup.notify_one();
        }
        Ok(task)
    }

    async fn release(
        &self,
        fence: &Fence,
        release: Release,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        let mut state = self.state.lock();
        let ev = state.update(&fence.task_id, |t| {
            logic::check_fence(t, fence)?;
            Ok(logic::release(t, &release, now))
        })?;
        state.push_event(ev);
        let task = state.tasks[&fence.task_id].clone();
        drop(state);
        self.wakeup.notify_one();
        Ok(task)
    }

    async fn extend_lease(&self, fence: &Fence, until: DateTime<Utc>) -> StoreResult<()> {
        self.state.lock().update(&fence.task_id, |t| {
            logic::check_fence(t, fence)?;
            logic::extend_lease(t, until);
            Ok(())
        })
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Task>> {
        Ok(self.state.lock().tasks.get(id).cloned())
    }

    async fn attempts(&self, id: &str) -> StoreResult<Vec<AttemptRecord>> {
        Ok(self
            .state
            .lock()
            .attempts
            .get(id)
            .cloned()
            .unwrap_or_default())
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<TaskEvent>> {
        Ok(self
            .state
            .lock()
            .events
            .get(id)
            .cloned()
            .unwrap_or_default())
    }

    async fn cancel(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CancelOutcome> {
        let mut state = self.state.lock();
        let (out, ev) = state.update(id, |t| Ok(logic::cancel(t, reason, now)))?;
        if let Some(ev) = ev {
            state.push_event(ev);
        }
        Ok(out)
    }

    async fn retry_now(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Task> {
        let mut state = self.state.lock();
        let ev = state.update(id, |t| logic::retry_now(t, now))?;
        state.push_event(ev);
        let task = state.tasks[id].clone();
        drop(state);
        self.wakeup.notify_one();
        Ok(task)
    }

    async fn record_callback(&self, id: &str, callback: CallbackRecord) -> StoreResult<Task> {
        let mut state = self.state.lock();
        let ev = state.update(id, |t| Ok(logic::record_callback(t, callback)))?;
        state.push_event(ev);
        Ok(state.tasks[id].clone())
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Page> {
        let state = self.state.lock();
        let limit = codec::page_size(filter.limit);
        let upper = filter.before_seq.unwrap_or(i64::MAX);
        let mut tasks: Vec<&Task> = Vec::with_capacity(limit + 1);
        for id in state.by_seq.range(..upper).rev().map(|(_, id)| id) {
            let Some(t) = state.tasks.get(id) else {
                continue;
            };
            let keep = filter.status.is_none_or(|s| t.status == s)
                && filter.priority.is_none_or(|p| t.priority == p)
                && filter.kind.as_ref().is_none_or(|k| &t.kind == k)
                && filter
                    .target
                    .as_ref()
                    .is_none_or(|tg| t.target.as_ref() == Some(tg));
            if keep {
                tasks.push(t);
                if tasks.len() > limit {
                    break;
                }
            }
        }
        Ok(codec::page(tasks.into_iter().cloned().collect(), limit))
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let state = self.state.lock();
        let earliest = state
            .due
            .iter()
            .filter_map(|s| s.first().map(|k| k.0))
            .chain(state.leases.first().map(|k| k.0))
            .min();
        Ok(earliest.and_then(DateTime::from_timestamp_millis))
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let state = self.state.lock();
        let mut by_status_priority = Vec::new();
        for status in TaskStatus::ALL {
            for priority in Priority::ALL {
                let n = state.tally[status_index(status)][usize::from(priority.rank())];
                if n > 0 {
                    by_status_priority.push((status, priority, n));
                }
            }
        }
        let oldest_due_at = state
            .due
            .iter()
            .filter_map(|s| s.first().map(|k| k.0))
            .min()
            .and_then(DateTime::from_timestamp_millis);
        Ok(Counts {
            by_status_priority,
            oldest_due_at,
        })
    }

    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut state = self.state.lock();
        let old: Vec<String> = state
            .tasks
            .values()
            .filter(|t| t.status.is_final() && t.finished_at.is_some_and(|f| f < before))
            .map(|t| t.id.clone())
            .collect();
        for id in &old {
            if let Some(t) = state.tasks.remove(id) {
                state.count(t.status, t.priority, false);
                state.by_seq.remove(&t.seq);
                if let Some(k) = t.idempotency_key {
                    state.idempotency.remove(&k);
                }
            }
            state.attempts.remove(id);
            state.events.remove(id);
        }
        Ok(old.len() as u64)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }
}
