//! How long a request will take, as the user is told: learned per request class from finished
//! jobs ([`DurationStats`]), rebuilt from the job store at start
//! ([`AsyncTaskManager::learn_durations`](crate::AsyncTaskManager::learn_durations)) so a restart
//! remembers.

use std::time::Duration;

use crate::stats::DurationStats;

/// What the seed tells users before anything was learned.
pub const DEFAULT_ESTIMATE_ZH: &str = "2-5 分钟";

fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

/// The estimate quoted to the user: the seed's "2-5 分钟" until the class was seen; "N 分钟左右"
/// after one or two runs (their weighted average); the median to the 90th percentile of the
/// last runs after three.
pub fn estimate_zh(stats: &DurationStats, class: &str) -> String {
    let runs = stats.runs(class);
    if runs == 0 {
        return DEFAULT_ESTIMATE_ZH.to_owned();
    }
    if runs >= 3
        && let (Some(p50), Some(p90)) = (stats.quantile(class, 0.5), stats.quantile(class, 0.9))
        && minutes(p90) > minutes(p50)
    {
        return format!("{}-{} 分钟", minutes(p50), minutes(p90));
    }
    let typical = stats.estimate(class).unwrap_or_default();
    format!("{} 分钟左右", minutes(typical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quote_follows_what_was_learnt() {
        let stats = DurationStats::default();
        assert_eq!(estimate_zh(&stats, "分析公司"), "2-5 分钟");
        stats.record("分析公司", Duration::from_secs(30));
        assert_eq!(estimate_zh(&stats, "分析公司"), "1 分钟左右");
        for s in [100, 130, 170, 400, 420] {
            stats.record("分析公司", Duration::from_secs(s));
        }
        assert_eq!(estimate_zh(&stats, "分析公司"), "3-7 分钟");
    }
}
