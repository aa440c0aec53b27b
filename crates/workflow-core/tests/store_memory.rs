//! The conformance suite against `MemoryStore`.

#[macro_use]
mod conformance;

use std::sync::Arc;

use workflow_core::{MemoryStore, Store};

async fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

conformance_tests!(memory());
