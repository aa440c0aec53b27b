//! The background loop: claims due work while slots are free, sleeps until more can be due,
//! keeps the gauges and the pruning going, and drains on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use super::Inner;
use super::attempt::{claimed_slot, spawn_attempt};
use crate::model::{Priority, TaskStatus};
use crate::store::{Fence, Release};

/// How often a loop whose due work is held back by per-target caps looks for other work.
const CAPPED_RECHECK: Duration = Duration::from_secs(1);

/// What one claim round found.
enum Round {
    /// A full batch: more may be due, claim again at once.
    Full,
    /// Less than a batch, or no free slot: sleep. `capped`: something may be due that this
    /// loop cannot take now (no free slot, or a target at its cap or held), so the store's
    /// next due time says nothing about other work.
    Partial {
        free: usize,
        capped: bool,
        hold_ends: Option<DateTime<Utc>>,
    },
    /// The store failed; it was logged and waited for.
    Failed,
}

/// Claims and runs until shutdown, then drains.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut gauges =
        tokio::time::interval(inner.config.gauge_interval.max(Duration::from_millis(100)));
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wakeup = inner.store.wakeup();
    loop {
        reap(&inner);
        if inner.stop_claiming.is_cancelled() {
            break;
        }
        let (free, capped, hold_ends) = match claim_round(&inner).await {
            Round::Full | Round::Failed => continue,
            Round::Partial {
                free,
                capped,
                hold_ends,
            } => (free, capped, hold_ends),
        };
        let sleep_for = idle_sleep(&inner, free, capped, hold_ends).await;
        // Housekeeping ticks are handled here without going back to the store for work.
        let deadline = tokio::time::Instant::now() + sleep_for;
        loop {
            tokio::select! {
                () = wakeup.notified() => {}
                () = inner.slot_freed.notified() => {
                    reap(&inner);
                    // A freed slot matters only when the last round was short of slots or
                    // skipped a target; otherwise nothing waits that it could take, and
                    // claiming now would be a wasted write (handed-off attempts end here).
                    if free > 0 && !capped { continue; }
                }
                () = tokio::time::sleep_until(deadline) => {}
                () = inner.stop_claiming.cancelled() => {}
                _ = gauges.tick() => { refresh_gauges(&inner).await; continue; }
                _ = prune.tick(), if inner.config.prune_after.is_some() => { prune_old(&inner).await; continue; }
            }
            break;
        }
    }
    let attempts = inner.attempts.lock().take().unwrap_or_default();
    drain(&inner, attempts).await;
}

/// Drops finished attempts from the set without waiting (a panic was logged by its slot).
fn reap(inner: &Inner) {
    if let Some(set) = inner.attempts.lock().as_mut() {
        while set.try_join_next().is_some() {}
    }
}

/// Claims at most the free slots' worth of due tasks, skipping targets at their cap or held,
/// and starts an attempt for each.
async fn claim_round(inner: &Arc<Inner>) -> Round {
    let (free, skip, hold_ends, backlog) = {
        let mut f = inner.in_flight.lock();
        let (skip, hold_ends) =
            f.skipped_targets(inner.config.per_target_in_flight, inner.clock.now());
        (
            inner.config.max_in_flight.saturating_sub(f.total),
            skip,
            hold_ends,
            f.backlog,
        )
    };
    if free == 0 {
        return Round::Partial {
            free,
            capped: true,
            hold_ends,
        };
    }
    let want = free.min(inner.config.batch_size.max(1));
    inner.claim_rounds.fetch_add(1, Ordering::Relaxed);
    let now = inner.clock.now();
    let claimed = match inner
        .store
        .claim_due(&inner.config.owner_id, now, inner.config.lease, want, &skip)
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::error!(error = %e, "claiming tasks failed; retrying in 1 s");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = inner.stop_claiming.cancelled() => {}
            }
            return Round::Failed;
        }
    };
    let full = claimed.len() == want;
    let mut start = Vec::with_capacity(claimed.len());
    let mut extra = Vec::new();
    for task in claimed {
        let at_cap = inner
            .in_flight
            .lock()
            .target_full(task.target.as_deref(), inner.config.per_target_in_flight);
        if at_cap {
            extra.push(task);
            continue;
        }
        // The slot now, so the cap check of the next task counts this one.
        let (slot, token) = claimed_slot(inner, &task);
        start.push((task, slot, token));
    }
    // A short round that skipped no target and gave nothing back claimed everything due when
    // it began: new tasks may go straight to free workers again (engine/handoff.rs) without
    // overtaking any. A skipped target (at its cap, or held) still has due work waiting for
    // its slots, which a new task for it must not take.
    if !full && skip.is_empty() && extra.is_empty() {
        let mut f = inner.in_flight.lock();
        f.drained = f.drained.max(backlog);
    }
    if let Some(set) = inner.attempts.lock().as_mut() {
        // Only the drain after this loop takes the set, so it is always here.
        for (task, slot, token) in start {
            spawn_attempt(inner, set, task, slot, token);
        }
    }
    // A batch may hold more tasks for one target than its cap allows: give the extra back,
    // without spending an attempt, once the others run, and all at once, so the store can
    // commit them together rather than one write after another while slots free up.
    let now = inner.clock.now();
    let give_backs = extra.iter().map(|task| async move {
        let release = Release {
            at: now,
            reason: "target at its concurrency cap".to_owned(),
        };
        if let Err(e) = inner.store.release(&Fence::of(task), release, now).await {
            tracing::warn!(task_id = %task.id, error = %e, "could not give back a claimed task");
        }
    });
    futures::future::join_all(give_backs).await;
    if full {
        Round::Full
    } else {
        Round::Partial {
            free,
            capped: !skip.is_empty(),
            hold_ends,
        }
    }
}

/// How long to sleep when nothing more can be claimed now: until the next due time, or
/// shortly while due work waits for a capped target, or the longest idle sleep.
async fn idle_sleep(
    inner: &Inner,
    free: usize,
    capped: bool,
    hold_ends: Option<DateTime<Utc>>,
) -> Duration {
    if free == 0 {
        // A freed slot wakes the loop.
        return inner.config.max_idle;
    }
    match inner.store.next_due_at().await {
        Ok(Some(at)) => {
            let now = inner.clock.now();
            if at > now {
                return (at - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(inner.config.max_idle);
            }
            // Due but not claimable: its target is at its cap (a freed slot wakes us), or it
            // became due just after the claim. Other targets' tasks may fall due before any
            // slot frees, and the store cannot say when, so look again shortly: this only
            // happens while busy, never when idle.
            if capped {
                // A held target may go again before the recheck.
                hold_ends
                    .map_or(CAPPED_RECHECK, |end| {
                        (end - now).to_std().unwrap_or_default()
                    })
                    .clamp(Duration::from_millis(10), CAPPED_RECHECK)
            } else {
                Duration::from_millis(10)
            }
        }
        Ok(None) => inner.config.max_idle,
        Err(e) => {
            tracing::error!(error = %e, "reading the next due time failed");
            Duration::from_secs(1)
        }
    }
}

async fn refresh_gauges(inner: &Inner) {
    let Ok(counts) = inner.store.counts().await else {
        return;
    };
    for status in TaskStatus::ALL {
        for p in Priority::ALL {
            let n = counts
                .by_status_priority
                .iter()
                .find(|(s, pr, _)| *s == status && *pr == p)
                .map_or(0, |(_, _, n)| *n);
            metrics::gauge!("workflow_tasks", "status" => status.as_str(), "priority" => p.as_str()).set(n as f64);
        }
    }
    let age = counts.oldest_due_at.map_or(0.0, |at| {
        (inner.clock.now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!("workflow_oldest_due_task_age_seconds").set(age);
    metrics::gauge!("workflow_in_flight").set(inner.in_flight.lock().total as f64);
}

async fn prune_old(inner: &Inner) {
    let Some(after) = inner.config.prune_after else {
        return;
    };
    let before =
        inner.clock.now() - chrono::Duration::from_std(after).unwrap_or(chrono::TimeDelta::MAX);
    match inner.store.prune(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "pruned old final tasks"),
        Err(e) => tracing::warn!(error = %e, "pruning failed"),
    }
}

/// Lets running attempts finish within the grace period, then cancels them, gives them a
/// moment, aborts the rest and releases their leases so a restart picks them up at once.
async fn drain(inner: &Arc<Inner>, mut attempts: JoinSet<()>) {
    let grace = inner.config.shutdown_grace;
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = attempts.join_next() => if next.is_none() { return; },
            () = &mut deadline => break,
        }
    }
    // Past the grace: ask handlers to stop, give them a moment, then abandon them.
    inner.hard_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while attempts.join_next().await.is_some() {}
    })
    .await;
    attempts.abort_all();
    while attempts.join_next().await.is_some() {}
    // Aborted attempts dropped their slots unfinished, which lists their fences.
    let abandoned = std::mem::take(&mut inner.in_flight.lock().abandoned);
    let now = inner.clock.now();
    for fence in abandoned {
        let release = Release {
            at: now,
            reason: "released on shutdown".to_owned(),
        };
        match inner.store.release(&fence, release, now).await {
            Ok(_) => tracing::info!(task_id = %fence.task_id, "lease released on shutdown"),
            Err(e) => {
                tracing::warn!(task_id = %fence.task_id, error = %e, "could not release lease")
            }
        }
    }
}
