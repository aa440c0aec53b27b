//! CPU time and peak memory of a process, from `/proc` (Linux), and percentiles.

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux build we know).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    /// utime + stime, in clock ticks.
    pub(crate) ticks: u64,
    /// VmHWM: peak resident set size so far, in KiB.
    pub(crate) peak_rss_kib: u64,
    /// VmRSS: resident set size now, in KiB.
    pub(crate) rss_kib: u64,
}

impl Sample {
    /// CPU seconds between `self` (earlier) and `later`.
    pub(crate) fn cpu_seconds_to(self, later: Sample) -> f64 {
        later.ticks.saturating_sub(self.ticks) as f64 / TICKS_PER_SECOND
    }
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; zeros when the process is gone.
pub(crate) fn sample(pid: u32) -> Sample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        ticks: field(11) + field(12),
        peak_rss_kib: kib("VmHWM:"),
        rss_kib: kib("VmRSS:"),
    }
}

/// The child processes of `pid`, started by any of its threads (`/proc/<pid>/task/*/children`);
/// empty when the kernel does not publish them or the process is gone.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The `p` quantile (0.0 to 1.0) of sorted values, nearest rank; 0 when empty.
pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 0.5), 51.0);
        assert_eq!(pct(&v, 0.99), 99.0);
        assert_eq!(pct(&v, 1.0), 100.0);
        assert_eq!(pct(&[], 0.5), 0.0);
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        let s = sample(std::process::id());
        assert!(s.peak_rss_kib > 0);
        assert_eq!(sample(u32::MAX).peak_rss_kib, 0);
    }

    #[test]
    fn a_spawned_child_is_listed_under_its_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let listed = children(std::process::id());
        child.kill().ok();
        child.wait().ok();
        assert!(listed.contains(&child.id()), "{listed:?}");
    }
}
