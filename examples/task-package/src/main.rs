//! Run with: cargo run -p example-task-package
fn main() {}
