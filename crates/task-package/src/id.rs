//! Task ids in the seed's form `wf_<unix seconds>_<8 lowercase hex>`.

use std::sync::Mutex;

use rand::Rng;

/// Task id helpers.
#[derive(Debug, Clone, Copy)]
pub struct TaskId;

/// Hands out the hex parts of ids: a random start for each second, then counting up from it.
///
/// Counting makes ids unique within the process by construction (2^32 per second) and keeps
/// the ids of one second in issue order. Stores index tasks, their attempts and events by id,
/// and random ids scattered every group commit over the whole second's stretch of those
/// B-trees: a page written per id and index instead of a few pages per commit. The random start
/// keeps two processes issuing in the same second apart: their ranges meet only if the starts
/// fall within the count of ids apart, where independent random ids would clash at the
/// birthday rate.
#[derive(Debug)]
struct Issuer {
    /// The second of the latest ids and the hex part of the next one; `None` before the first.
    next: Mutex<Option<(u64, u32)>>,
}

impl Issuer {
    const fn new() -> Issuer {
        Issuer {
            next: Mutex::new(None),
        }
    }

    fn issue(&self, now: u64) -> String {
        // A poisoned lock only means another thread panicked holding it; the pair is always
        // whole.
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (secs, n) = match *next {
            // The same second, or the clock stepped back: ids keep the latest second seen.
            Some((secs, n)) if now <= secs => (secs, n),
            _ => (now, rand::rng().random()),
        };
        *next = Some((secs, n.wrapping_add(1)));
        format!("wf_{secs}_{n:08x}")
    }
}

/// The process-wide issuer behind [`TaskId::generate`].
static ISSUER: Issuer = Issuer::new();

impl TaskId {
    /// A new id for the current second: `wf_<unix seconds>_<8 lowercase hex>`.
    ///
    /// The hex part starts at 32 random bits each second and counts up, so ids are unique
    /// within a process (up to 2^32 per second) and follow each other in a store's indexes. If
    /// the system clock steps back, ids keep the latest second seen and keep counting. Two
    /// processes issuing k ids in the same second clash only if their random starts fall
    /// within k of each other (about 2k / 2^32). Ids are not secrets: reading a task needs an
    /// API key, and callbacks carry their own tokens.
    pub fn generate() -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ISSUER.issue(now)
    }

    /// The unix seconds of a valid id.
    pub fn unix_seconds(id: &str) -> Option<u64> {
        if !Self::is_valid(id) {
            return None;
        }
        id.get(3..)?.split_once('_')?.0.parse().ok()
    }

    /// Whether `id` has the form `wf_<digits>_<8 lowercase hex>`.
    pub fn is_valid(id: &str) -> bool {
        let Some(rest) = id.strip_prefix("wf_") else {
            return false;
        };
        let Some((secs, hex)) = rest.split_once('_') else {
            return false;
        };
        !secs.is_empty()
            && secs.len() <= 20
            && secs.bytes().all(|b| b.is_ascii_digit())
            && hex.len() == 8
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_have_the_seed_form() {
        let id = TaskId::generate();
        assert!(TaskId::is_valid(&id), "{id}");
        assert!(!TaskId::is_valid("wf_123_ABCDEF12"));
        assert!(!TaskId::is_valid("wf_123_abcdef1"));
        assert!(!TaskId::is_valid("task_123_abcdef12"));
        assert!(!TaskId::is_valid("wf__abcdef12"));
    }

    #[test]
    fn ids_of_one_second_count_up_from_a_random_start() {
        let issuer = Issuer::new();
        let hex = |id: &str| u32::from_str_radix(&id[id.len() - 8..], 16).unwrap();
        let ids: Vec<String> = (0..1_000).map(|_| issuer.issue(1_000)).collect();
        for pair in ids.windows(2) {
            assert_eq!(hex(&pair[1]), hex(&pair[0]).wrapping_add(1), "{pair:?}");
        }
        let next_second = issuer.issue(1_001);
        assert!(next_second.starts_with("wf_1001_"), "{next_second}");
        assert!(ids.iter().all(|id| TaskId::is_valid(id)));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_latest_second() {
        let issuer = Issuer::new();
        let later = issuer.issue(2_000);
        let earlier = issuer.issue(1_000);
        assert!(later.starts_with("wf_2000_"), "{later}");
        assert_eq!(TaskId::unix_seconds(&later), TaskId::unix_seconds(&earlier));
        assert_ne!(later, earlier);
    }

    #[test]
    fn unix_seconds_reads_the_timestamp_part() {
        assert_eq!(
            TaskId::unix_seconds("wf_1764000000_0a1b2c3d"),
            Some(1_764_000_000)
        );
        assert_eq!(TaskId::unix_seconds("wf_1764000000_0A1B2C3D"), None);
    }

    #[test]
    fn ids_are_unique_under_concurrency() {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| (0..25_000).map(|_| TaskId::generate()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id), "duplicate id");
            }
        }
        assert_eq!(all.len(), 200_000);
    }
}
