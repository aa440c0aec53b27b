//! The standard task package: types, validation, JSON and task ids.

mod priority;

pub use priority::{Priority, UnknownPriority};
