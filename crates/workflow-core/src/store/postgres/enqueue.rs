//! Group-committed enqueues, planned in Rust so no statement fails on a conflict, and the
//! single-statement insert of a lone enqueue.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::limit::{Estimate, far_below_limit, locked_active_count};
use super::sql::{Exec, db_err, is_row_error, pooled, retry_conflicts, row_to_task};
use crate::error::StoreError;
use crate::model::{NewTask, Task, TaskStatus};
use crate::store::batch::{Batch, error_chain};
use crate::store::codec::{TASK_COLS, json_text, ms, status_code};
use crate::store::logic;
use crate::store::{EnqueueLimits, Enqueued, StoreResult};

const INSERT_TASK: &str = "WITH ins AS (\
       INSERT INTO workflow_tasks (id, kind, priority, status, payload, target, attempt, tries, \
         max_attempts, next_run_at, lease_owner, lease_until, cancel_requested, created_at, \
         updated_at, idempotency_key) \
       VALUES ($1, $2, $3, $4, $5, $6, $11, 0, $7, $8, $12, $13, FALSE, $9, $9, $10) \
       ON CONFLICT DO NOTHING RETURNING seq, id), \
     ev AS (INSERT INTO workflow_events (task_id, at, from_status, to_status, reason) \
       SELECT id, $9::bigint, NULL::smallint, $14::smallint, 'created'::text FROM ins \
       UNION ALL \
       SELECT id, $9::bigint, $14::smallint, $4::smallint, 'claimed'::text FROM ins \
         WHERE $4::smallint <> $14::smallint) \
     SELECT seq FROM ins";

/// Inserts one task built by `logic::create` with its `created` event, and when it was
/// claimed on insert (`logic::claim`: status `processing`), its `claimed` event; an existing
/// idempotency key gives the existing task, an existing id [`StoreError::Duplicate`].
async fn insert_task(ex: &impl Exec, mut task: Task) -> StoreResult<Enqueued> {
    let payload = json_text(&task.payload);
    let rows = ex
        .rows(
            INSERT_TASK,
            &[
                &task.id,
                &task.kind,
                &i16::from(task.priority.rank()),
                &status_code(task.status),
                &payload,
                &task.target,
                &i64::from(task.max_attempts),
                &task.next_run_at.map(ms),
                &ms(task.created_at),
                &task.idempotency_key,
                &i64::from(task.attempt),
                &task.lease_owner,
                &task.lease_until.map(ms),
                &status_code(TaskStatus::Pending),
            ],
        )
        .await?;
    if let Some(row) = rows.first() {
        task.seq = row.try_get(0).map_err(db_err)?;
        return Ok(Enqueued::Created(task));
    }
    // A unique constraint held: the idempotency key (an existing task) or the id.
    if let Some(key) = &task.idempotency_key {
        let existing = ex
            .rows(
                &format!("SELECT {TASK_COLS} FROM workflow_tasks WHERE idempotency_key = $1"),
                &[key],
            )
            .await?;
        if let Some(r) = existing.first() {
            return Ok(Enqueued::Existing(row_to_task(r)?));
        }
    }
    Err(StoreError::Duplicate(task.id))
}

// === group-committed enqueues ===

/// The most enqueues one group-commit transaction carries (as
/// [`FINISH_BATCH`](super::finish::FINISH_BATCH)).
pub(super) const ENQUEUE_BATCH: usize = 256;

/// Background enqueuer tasks per store (as [`FINISHERS`](super::finish::FINISHERS)).
pub(super) const ENQUEUERS: usize = 2;

/// One queued [`Store::enqueue`](crate::Store::enqueue) call.
pub(super) struct EnqueueRequest {
    /// The row to insert, built by `logic::create` when the call was made.
    pub(super) task: Task,
    /// The queue limit, if any, and whether the caller's estimate already asked for an exact
    /// count.
    pub(super) limit: Option<u64>,
    pub(super) exact: bool,
}

/// One request of a batch as the writer sees it: the row, and the limit to check exactly
/// (`None`: no limit, or far below it).
struct EnqueueWork {
    task: Task,
    exact_limit: Option<u64>,
}

/// An enqueuer: writes each batch of queued enqueues in one transaction.
pub(super) struct Enqueuer {
    pub(super) pool: Pool,
    pub(super) estimate: Estimate,
}

impl Batch for Enqueuer {
    type Work = EnqueueRequest;
    type Output = Enqueued;
    const NAME: &'static str = "postgres enqueue";

    async fn run(&mut self, batch: Vec<EnqueueRequest>) -> StoreResult<Vec<StoreResult<Enqueued>>> {
        let (pool, estimate) = (&self.pool, &self.estimate);
        // The callers judged the limit one task at a time; the batch adds all of them.
        let seen = *estimate.lock();
        let adding = batch.len() as u64;
        let work: Vec<EnqueueWork> = batch
            .into_iter()
            .map(|r| {
                let exact = r.exact;
                EnqueueWork {
                    task: r.task,
                    exact_limit: r
                        .limit
                        .filter(|limit| exact || !far_below_limit(seen, *limit, adding)),
                }
            })
            .collect();
        match retry_conflicts(|| write_enqueues(pool, estimate, &work)).await {
            Err(e) if work.len() > 1 && is_row_error(&e) => {
                // One request's values were refused (say, an id too long for its index): write
                // each alone, so only that one fails.
                tracing::debug!(error = %error_chain(&e), "postgres enqueue batch refused; writing one by one");
                let mut outcomes = Vec::with_capacity(work.len());
                for w in &work {
                    let one =
                        retry_conflicts(|| write_enqueues(pool, estimate, std::slice::from_ref(w)))
                            .await;
                    outcomes.push(one.and_then(|mut v| {
                        v.pop()
                            .unwrap_or_else(|| Err(StoreError::backend("enqueue returned nothing")))
                    }));
                }
                Ok(outcomes)
            }
            other => other,
        }
    }
}

/// What the writer decided for one request of a planning round.
enum Plan {
    Create,
    Existing(Box<Task>),
    /// Existing: the task an earlier request of this round creates.
    ExistingPlanned(usize),
    Duplicate,
    Full(u64),
}

/// Applies a batch of enqueues in one transaction: the outcome of each request, in order, or
/// the database error that failed them all (nothing of the batch is then written).
///
/// The statements never fail on a conflict: the requests are planned in Rust (a key already
/// seen is `Existing`, an id already seen `Duplicate`, a creation past an exactly checked
/// limit `QueueFull`, each counting the batch's earlier creations), the creations are one
/// `INSERT ... ON CONFLICT DO NOTHING RETURNING` with their events, and a row that conflicted
/// with one this round did not know of (committed meanwhile by someone else) is looked up and
/// answered as `insert_task` would; the requests after it are planned again with what the
/// lookup found, so they never depend on a creation that did not happen.
async fn write_enqueues(
    pool: &Pool,
    estimate: &Estimate,
    work: &[EnqueueWork],
) -> StoreResult<Vec<StoreResult<Enqueued>>> {
    let mut client = pooled(pool).await?;
    if let [one] = work
        && one.exact_limit.is_none()
    {
        // A lone enqueue far from any limit: one statement, no transaction block.
        return Ok(vec![insert_task(&client, one.task.clone()).await]);
    }
    let tx = client.transaction().await.map_err(db_err)?;
    // Rows known to exist: found by a lookup, or created by this batch.
    let mut by_key: HashMap<String, Task> = HashMap::new();
    let mut ids: HashSet<String> = HashSet::new();
    let start = if work.iter().any(|w| w.exact_limit.is_some()) {
        // Near the limit an existing key or id must still be `Existing` or `Duplicate`, not
        // `QueueFull`, so look them all up first (after the lock: pipelined behind it).
        let all_ids: Vec<&str> = work.iter().map(|w| w.task.id.as_str()).collect();
        let all_keys: Vec<&str> = work
            .iter()
            .filter_map(|w| w.task.idempotency_key.as_deref())
            .collect();
        let (count, rows) = tokio::join!(
            locked_active_count(&tx, estimate),
            lookup(&tx, &all_ids, &all_keys)
        );
        let count = count?;
        learn(&rows?, &mut ids, &mut by_key)?;
        Some(count)
    } else {
        None
    };
    let mut outcomes: Vec<Option<StoreResult<Enqueued>>> = work.iter().map(|_| None).collect();
    let mut created = 0u64;
    let mut from = 0;
    while from < work.len() {
        let mut plans: Vec<(usize, Plan)> = Vec::new();
        let mut planned_keys: HashMap<&str, usize> = HashMap::new();
        let mut planned_ids: HashSet<&str> = HashSet::new();
        for (i, w) in work.iter().enumerate().skip(from) {
            if outcomes[i].is_some() {
                continue;
            }
            let t = &w.task;
            let key = t.idempotency_key.as_deref();
            let plan = if let Some(found) = key.and_then(|k| by_key.get(k)) {
                Plan::Existing(Box::new(found.clone()))
            } else if let Some(j) = key.and_then(|k| planned_keys.get(k)) {
                Plan::ExistingPlanned(*j)
            } else if ids.contains(&t.id) || planned_ids.contains(t.id.as_str()) {
                Plan::Duplicate
            } else if let (Some(limit), Some(start)) = (w.exact_limit, start)
                && start + created + planned_ids.len() as u64 + 1 > limit
            {
                Plan::Full(limit)
            } else {
                planned_ids.insert(&t.id);
                if let Some(k) = key {
                    planned_keys.insert(k, i);
                }
                Plan::Create
            };
            plans.push((i, plan));
        }
        let creates: Vec<&Task> = plans
            .iter()
            .filter(|(_, p)| matches!(p, Plan::Create))
            .map(|(i, _)| &work[*i].task)
            .collect();
        let seqs = insert_tasks(&tx, &creates).await?;
        let conflicted: Vec<usize> = plans
            .iter()
            .filter(|(i, p)| matches!(p, Plan::Create) && !seqs.contains_key(&work[*i].task.id))
            .map(|(i, _)| *i)
            .collect();
        if !conflicted.is_empty() {
            let c_ids: Vec<&str> = conflicted
                .iter()
                .map(|i| work[*i].task.id.as_str())
                .collect();
            let c_keys: Vec<&str> = conflicted
                .iter()
                .filter_map(|i| work[*i].task.idempotency_key.as_deref())
                .collect();
            learn(&lookup(&tx, &c_ids, &c_keys).await?, &mut ids, &mut by_key)?;
        }
        let first_conflict = conflicted.first().copied().unwrap_or(work.len());
        for (i, plan) in plans {
            let t = &work[i].task;
            let outcome = match plan {
                Plan::Create => match seqs.get(&t.id) {
                    Some(seq) => {
                        let mut task = t.clone();
                        task.seq = *seq;
                        created += 1;
                        ids.insert(task.id.clone());
                        if let Some(k) = &task.idempotency_key {
                            by_key.insert(k.clone(), task.clone());
                        }
                        Ok(Enqueued::Created(task))
                    }
                    // Conflicted: as `insert_task` answers it.
                    None => match t.idempotency_key.as_ref().and_then(|k| by_key.get(k)) {
                        Some(found) => Ok(Enqueued::Existing(found.clone())),
                        None => Err(StoreError::Duplicate(t.id.clone())),
                    },
                },
                // Planned on creations that may not have happened: plan again.
                _ if i > first_conflict => continue,
                Plan::Existing(found) => Ok(Enqueued::Existing(*found)),
                Plan::ExistingPlanned(j) => match &outcomes[j] {
                    Some(Ok(Enqueued::Created(task))) => Ok(Enqueued::Existing(task.clone())),
                    _ => return Err(StoreError::backend("enqueue batch planned out of order")),
                },
                Plan::Duplicate => Err(StoreError::Duplicate(t.id.clone())),
                Plan::Full(limit) => Err(StoreError::QueueFull { limit }),
            };
            outcomes[i] = Some(outcome);
        }
        from = first_conflict + 1;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::backend("enqueue left unanswered"))))
        .collect())
}

/// Records looked-up rows as known: their ids, and their tasks by idempotency key.
fn learn(
    rows: &[Row],
    ids: &mut HashSet<String>,
    by_key: &mut HashMap<String, Task>,
) -> StoreResult<()> {
    for r in rows {
        let t = row_to_task(r)?;
        ids.insert(t.id.clone());
        if let Some(k) = t.idempotency_key.clone() {
            by_key.insert(k, t);
        }
    }
    Ok(())
}

/// The tasks with any of these ids or idempotency keys.
async fn lookup(tx: &impl Exec, ids: &[&str], keys: &[&str]) -> StoreResult<Vec<Row>> {
    tx.rows(
        &format!(
            "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE id = ANY($1::text[]) OR idempotency_key = ANY($2::text[])"
        ),
        &[&ids, &keys],
    )
    .await
}

/// Inserts many new tasks and their `created` events (and `claimed` events, for those claimed
/// on insert) in one statement, in the given order; a row that conflicts (id or idempotency
/// key) is skipped. The `seq` of each row inserted, by id.
async fn insert_tasks(tx: &impl Exec, tasks: &[&Task]) -> StoreResult<HashMap<String, i64>> {
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.as_str()).collect();
    let priorities: Vec<i16> = tasks.iter().map(|t| i16::from(t.priority.rank())).collect();
    let statuses: Vec<i16> = tasks.iter().map(|t| status_code(t.status)).collect();
    let payloads: Vec<String> = tasks.iter().map(|t| json_text(&t.payload)).collect();
    let targets: Vec<Option<&str>> = tasks.iter().map(|t| t.target.as_deref()).collect();
    let max_attempts: Vec<i64> = tasks.iter().map(|t| i64::from(t.max_attempts)).collect();
    let next_run_at: Vec<Option<i64>> = tasks.iter().map(|t| t.next_run_at.map(ms)).collect();
    let created: Vec<i64> = tasks.iter().map(|t| ms(t.created_at)).collect();
    let keys: Vec<Option<&str>> = tasks.iter().map(|t| t.idempotency_key.as_deref()).collect();
    let attempts: Vec<i64> = tasks.iter().map(|t| i64::from(t.attempt)).collect();
    let owners: Vec<Option<&str>> = tasks.iter().map(|t| t.lease_owner.as_deref()).collect();
    let leases: Vec<Option<i64>> = tasks.iter().map(|t| t.lease_until.map(ms)).collect();
    let rows = tx
        .rows(
            "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], \
               $4::smallint[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], \
               $10::text[], $11::bigint[], $12::text[], $13::bigint[]) WITH ORDINALITY AS \
               u(id, kind, priority, status, payload, target, max_attempts, next_run_at, \
               created_at, idempotency_key, attempt, lease_owner, lease_until, ord)), \
             ins AS (INSERT INTO workflow_tasks (id, kind, priority, status, payload, target, \
               attempt, tries, max_attempts, next_run_at, lease_owner, lease_until, \
               cancel_requested, created_at, updated_at, idempotency_key) \
               SELECT id, kind, priority, status, payload, target, attempt, 0, max_attempts, \
                 next_run_at, lease_owner, lease_until, FALSE, created_at, created_at, \
                 idempotency_key FROM u ORDER BY ord \
               ON CONFLICT DO NOTHING RETURNING seq, id, status, created_at), \
             ev AS (INSERT INTO workflow_events (task_id, at, from_status, to_status, reason) \
               SELECT id, at, from_status, to_status, reason FROM ( \
                 SELECT seq, 0 AS k, id, created_at AS at, NULL::smallint AS from_status, \
                   $14::smallint AS to_status, 'created'::text AS reason FROM ins \
                 UNION ALL \
                 SELECT seq, 1, id, created_at, $14::smallint, status, 'claimed'::text FROM ins \
                   WHERE status <> $14::smallint) e \
               ORDER BY seq, k) \
             SELECT id, seq FROM ins",
            &[
                &ids,
                &kinds,
                &priorities,
                &statuses,
                &payloads,
                &targets,
                &max_attempts,
                &next_run_at,
                &created,
                &keys,
                &attempts,
                &owners,
                &leases,
                &status_code(TaskStatus::Pending),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?)))
        .collect()
}

impl super::PostgresStore {
    pub(super) async fn enqueue_many(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>> {
        let now = Utc::now();
        let tasks = tasks
            .into_iter()
            .map(|new| logic::create(new, 0, now).0)
            .collect();
        self.insert_many(tasks, limits).await
    }

    /// Inserts rows built by `logic::create` (and claimed by `logic::claim`, for a claim on
    /// insert) in one transaction, all or none.
    pub(super) async fn insert_many(
        &self,
        tasks: Vec<Task>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>> {
        let exact = limits
            .max_active
            .filter(|limit| self.limit_needs_check(*limit, tasks.len() as u64));
        let out = retry_conflicts(|| self.insert_all(&tasks, exact)).await?;
        self.after_enqueue(&out);
        Ok(out)
    }

    /// Inserts `tasks` in one transaction (one statement for a lone task far from a limit),
    /// all or none: past an exactly checked `limit`, none.
    async fn insert_all(&self, tasks: &[Task], limit: Option<u64>) -> StoreResult<Vec<Enqueued>> {
        let mut client = self.client().await?;
        if let ([one], None) = (tasks, limit) {
            // One statement inserts the row and its event: atomic without a transaction
            // block, so one round trip.
            return Ok(vec![insert_task(&client, one.clone()).await?]);
        }
        let tx = client.transaction().await.map_err(db_err)?;
        let start = match limit {
            Some(_) => Some(self.locked_active_count(&tx).await?),
            None => None,
        };
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(insert_task(&tx, task.clone()).await?);
        }
        let fresh = out
            .iter()
            .filter(|e| matches!(e, Enqueued::Created(_)))
            .count() as u64;
        if let (Some(limit), Some(start)) = (limit, start)
            && fresh > 0
            && start + fresh > limit
        {
            return Err(StoreError::QueueFull { limit });
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    pub(super) fn after_enqueue(&self, out: &[Enqueued]) {
        let fresh = out
            .iter()
            .filter(|e| matches!(e, Enqueued::Created(_)))
            .count() as u64;
        self.bump_estimate(fresh);
        // Tasks claimed on insert are this engine's already: nothing for a claim loop.
        let unclaimed = out
            .iter()
            .any(|e| matches!(e, Enqueued::Created(t) if t.status != TaskStatus::Processing));
        if unclaimed {
            self.wake();
        }
    }
}
