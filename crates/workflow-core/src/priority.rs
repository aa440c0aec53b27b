//! Task priority: the claim order of the queue (critical first). The engine's own type, so it
//! depends on no product crate; `task_package::Priority` (the package's field) converts with
//! `rank`/`from_rank`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How urgent a task is. Ordered: `Critical > High > Medium > Low`.
///
/// Parsing is case-insensitive (`"HIGH"`, `"high"` and `"High"` are all [`Priority::High`]);
/// serialisation is lowercase, as the seed writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Handle first.
    Critical,
    /// Before medium and low.
    High,
    /// The default.
    #[default]
    Medium,
    /// Last.
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }

    /// Claim rank: 0 for critical up to 3 for low (lower is claimed first). Stores index on it.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Medium => 2,
            Priority::Low => 3,
        }
    }

    /// The priority of a [`rank`](Priority::rank), if valid.
    pub fn from_rank(rank: u8) -> Option<Priority> {
        Priority::ALL.get(usize::from(rank)).copied()
    }
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // A lower rank is more urgent, so it compares greater.
        other.rank().cmp(&self.rank())
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a string names no [`Priority`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?} (expected critical, high, medium or low)")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_is_greatest_and_low_least() {
        let mut v = vec![
            Priority::Low,
            Priority::Critical,
            Priority::Medium,
            Priority::High,
        ];
        v.sort();
        assert_eq!(
            v,
            [
                Priority::Low,
                Priority::Medium,
                Priority::High,
                Priority::Critical
            ]
        );
    }

    #[test]
    fn parses_case_insensitively() {
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert_eq!(
            " Critical ".parse::<Priority>().unwrap(),
            Priority::Critical
        );
        assert!("urgent".parse::<Priority>().is_err());
    }
}
