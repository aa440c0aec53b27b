//! The conformance suite against `MemoryStore`.

use std::sync::Arc;

use workflow_core::{MemoryStore, Store};

async fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

workflow_core::conformance_tests!(memory());
