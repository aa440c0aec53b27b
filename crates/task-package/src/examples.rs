//! The seed's sample request bodies, kept once (the golden files under `tests/golden/`) for
//! tests, examples, benches and docs.

/// The seed's `POST /workflow/tasks` example in its flat form, verbatim (the golden file
/// `tests/golden/seed_flat_request.json`).
pub const SEED_FLAT_REQUEST: &str = include_str!("../tests/golden/seed_flat_request.json");

/// [`SEED_FLAT_REQUEST`] as JSON, for callers that change a field (e.g. `webhook_url`).
pub fn seed_flat_request() -> serde_json::Value {
    serde_json::from_str(SEED_FLAT_REQUEST).expect("the golden seed request is JSON")
}

/// The seed's `POST /workflow/tasks` example in the nested form (the golden file
/// `tests/golden/seed_request.json`).
pub const SEED_REQUEST: &str = include_str!("../tests/golden/seed_request.json");

/// [`SEED_REQUEST`] as JSON, for callers that change a field (e.g. `webhook_url`).
pub fn seed_request() -> serde_json::Value {
    serde_json::from_str(SEED_REQUEST).expect("the golden seed request is JSON")
}
