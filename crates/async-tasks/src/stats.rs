//! [`DurationStats`]: how long each class of request took, to predict long ones and quote an
//! estimate.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// How many recent runs per class [`DurationStats::quantile`] looks at.
const RECENT_RUNS: usize = 64;

#[derive(Debug, Default)]
struct ClassStats {
    /// Exponentially weighted average, seconds.
    ewma: f64,
    /// Runs seen.
    count: u64,
    /// The last [`RECENT_RUNS`] durations, seconds.
    recent: VecDeque<f64>,
}

/// Observed durations per task class, so a caller can predict whether a request will be long:
/// an exponentially weighted average (a class that became slow is recognised after a few runs)
/// and quantiles over the last 64 runs.
#[derive(Debug, Clone, Default)]
pub struct DurationStats {
    classes: Arc<Mutex<HashMap<String, ClassStats>>>,
}

impl DurationStats {
    /// Records one run of `class`.
    pub fn record(&self, class: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut map = self.classes.lock();
        let entry = map.entry(class.to_owned()).or_default();
        entry.ewma = if entry.count == 0 {
            secs
        } else {
            0.7 * entry.ewma + 0.3 * secs
        };
        entry.count += 1;
        if entry.recent.len() == RECENT_RUNS {
            entry.recent.pop_front();
        }
        entry.recent.push_back(secs);
    }

    /// The typical duration of `class` (weighted average), once it has been seen.
    pub fn estimate(&self, class: &str) -> Option<Duration> {
        self.classes
            .lock()
            .get(class)
            .map(|c| Duration::from_secs_f64(c.ewma))
    }

    /// The `q` quantile (0.0 to 1.0, e.g. 0.9) of the last runs of `class`, once it has been seen.
    pub fn quantile(&self, class: &str, q: f64) -> Option<Duration> {
        let map = self.classes.lock();
        let c = map.get(class)?;
        let mut sorted: Vec<f64> = c.recent.iter().copied().collect();
        drop(map);
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().checked_sub(1)?;
        // Nearest rank over at most 64 samples.
        let idx = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Some(Duration::from_secs_f64(sorted[idx]))
    }

    /// How many runs of `class` have been recorded.
    pub fn runs(&self, class: &str) -> u64 {
        self.classes.lock().get(class).map_or(0, |c| c.count)
    }

    /// Whether `class` typically takes longer than `threshold`.
    pub fn predict_long(&self, class: &str, threshold: Duration) -> bool {
        self.estimate(class).is_some_and(|d| d > threshold)
    }
}
