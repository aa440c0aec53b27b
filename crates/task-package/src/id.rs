//! Task ids in the seed's form `wf_<unix seconds>_<8 lowercase hex>`.

use std::collections::HashSet;
use std::sync::Mutex;

use rand::Rng;

/// Task id helpers.
#[derive(Debug, Clone, Copy)]
pub struct TaskId;

/// Ids handed out in the current second, so two callers never get the same one.
static ISSUED: Mutex<(u64, Option<HashSet<u32>>)> = Mutex::new((0, None));

impl TaskId {
    /// A new id for the current second: `wf_<unix seconds>_<8 lowercase hex>`.
    ///
    /// Random 32 bits, checked against every id handed out by this process in the same second,
    /// so ids are unique within a process even at millions per second; across processes the
    /// chance of a clash is that of two random 32-bit values in the same second.
    pub fn generate() -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut rng = rand::rng();
        let mut issued = ISSUED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if issued.0 != secs || issued.1.is_none() {
            *issued = (secs, Some(HashSet::new()));
        }
        let set = issued.1.get_or_insert_with(HashSet::new);
        loop {
            let n: u32 = rng.random();
            if set.insert(n) {
                return format!("wf_{secs}_{n:08x}");
            }
        }
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
