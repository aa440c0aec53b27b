//! Per-target circuit breakers, a keyed registry and a tower layer.
//!
//! A breaker is closed (calls go through), open (calls fail fast) or half-open (a few probes go
//! through). It trips on a failure rate over a sliding window of the last calls (once the window
//! holds a minimum number), or on a run of consecutive failures, or at once when the target
//! sends `Retry-After`. It stays open for a wait that doubles on each trip that follows a failed
//! probe (capped), then lets probes through; a successful probe closes it.
//!
//! Time is [`tokio::time::Instant`], so tests drive breakers with paused time.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use circuit_breaker::{BreakerConfig, CircuitBreaker, State};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let breaker = Arc::new(CircuitBreaker::new(BreakerConfig {
//!     consecutive_failures: 2,
//!     ..BreakerConfig::default()
//! }));
//! breaker.try_acquire().unwrap().failure();
//! breaker.try_acquire().unwrap().failure();
//! assert_eq!(breaker.state(), State::Open);
//! let open = breaker.try_acquire().unwrap_err();
//! assert!(open.retry_in.as_secs() <= 30);
//! # }
//! ```
//!
//! # Feature flags
//!
//! None. The tower layer ([`CircuitBreakerLayer`]) is always built: tower is already in every
//! consumer's tree.

mod breaker;
mod layer;
mod registry;

pub use breaker::{BreakerConfig, CircuitBreaker, CircuitOpen, Permit, Snapshot, State};
pub use layer::{BoxError, CircuitBreakerLayer, CircuitBreakerService};
pub use registry::{BreakerRegistry, StateChange};
