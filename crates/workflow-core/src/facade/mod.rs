//! Facades with the seed's vocabulary over the [`Engine`](crate::Engine).

mod workflow;

pub use workflow::{DispatchRequest, TaskStatusView, WorkflowConfig, WorkflowManager};
