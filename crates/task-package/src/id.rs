//! Task ids in the seed's form `wf_<unix seconds>_<8 lowercase hex>`.

use std::collections::HashSet;
use std::sync::Mutex;

use rand::Rng;

/// Task id helpers.
#[derive(Debug, Clone, Copy)]
pub struct TaskId;

/// Hands out the random parts of ids, unique per second.
#[derive(Debug)]
struct Issuer {
    /// The second of the latest ids and the random parts handed out in it. `None` until the
    /// first id, because a `HashSet` cannot be built in a `static` initialiser.
    issued: Mutex<(u64, Option<HashSet<u32>>)>,
}

impl Issuer {
    const fn new() -> Issuer {
        Issuer {
            issued: Mutex::new((0, None)),
        }
    }

    fn issue(&self, now: u64) -> String {
        let mut rng = rand::rng();
        // A poisoned lock only means another thread panicked while inserting; the set is
        // still a valid record of issued ids.
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (secs, set) = &mut *issued;
        if now > *secs || set.is_none() {
            *secs = now.max(*secs);
            *set = Some(HashSet::new());
        }
        let secs = *secs;
        let set = set.get_or_insert_with(HashSet::new);
        loop {
            let n: u32 = rng.random();
            if set.insert(n) {
                return format!("wf_{secs}_{n:08x}");
            }
        }
    }
}

/// The process-wide issuer behind [`TaskId::generate`].
static ISSUER: Issuer = Issuer::new();

impl TaskId {
    /// A new id for the current second: `wf_<unix seconds>_<8 lowercase hex>`.
    ///
    /// The hex part is 32 random bits, checked against every id this process handed out in the
    /// same second, so ids are unique within a process even at millions per second. If the
    /// system clock steps back, ids keep the latest second seen, so the check still holds.
    /// Across processes the chance of a clash is that of two random 32-bit values in the same
    /// second.
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
