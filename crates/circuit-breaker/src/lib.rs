//! Per-target circuit breakers, a keyed registry and a tower layer.
//!
//! A breaker is closed (calls go through), open (calls fail fast) or half-open (a bounded
//! number of probes go through). It trips on a failure rate over a sliding window of the last
//! calls (once the window holds a minimum number), on a run of consecutive failures, or at once
//! when the target sends `Retry-After` ([`Permit::failure_with_retry_after`], which pins the open
//! wait to it). Otherwise it stays open for a wait that doubles on each trip that follows a
//! failed probe (capped), then lets probes through; a successful probe closes it and resets
//! the wait. Results of calls started before the last state change are ignored.
//!
//! - [`CircuitBreaker`]: ask with [`CircuitBreaker::try_acquire`], report on the [`Permit`]. The
//!   lock guards a few counters (no allocation, no await), so many tasks can ask at once.
//! - [`BreakerRegistry`]: one breaker per key (e.g. `scheme://host:port`), bounded memory (idle
//!   closed breakers are evicted), [`BreakerRegistry::snapshot`] for metrics, and
//!   [`StateChange`] events on a tokio broadcast channel ([`BreakerRegistry::subscribe`]).
//! - [`CircuitBreakerLayer`]: a tower layer built like `LoadShed`: the call fails fast with
//!   [`CircuitOpen`] while open; an inner error counts as a failure.
//! - [`KeyedCircuitBreakerLayer`]: one layer in front of many targets: each call asks the breaker
//!   of its key in a shared [`BreakerRegistry`], and a [`BreakerPolicy`] reads the answer (an
//!   `Ok` report of "HTTP 503" is a failure of the target; a request refused before it was sent
//!   is nothing) and makes the answer to give while open. The webhook client's sends and the
//!   dispatcher's channel deliveries both go through it: it is the one place a permit is taken.
//!
//! Time is [`tokio::time::Instant`], so tests drive breakers with paused time.
//!
//! Why our own: `failsafe` and `tower-circuitbreaker`-style crates either lack a keyed,
//! memory-bounded registry, `Retry-After` pinning and a "retry in" answer (which the dispatcher
//! turns into `503` + `Retry-After` and the engine into a reschedule without spending an
//! attempt), or bring their own clocks that paused tokio time cannot drive.
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
//!
//! // The same breaker guarding a tower service: it fails fast without calling the service.
//! use tower::{Layer, Service, ServiceExt};
//! let mut svc = circuit_breaker::CircuitBreakerLayer::new(breaker.clone())
//!     .layer(tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
//! assert!(err.is::<circuit_breaker::CircuitOpen>());
//! # }
//! ```
//!
//! # Feature flags
//!
//! None. The tower layer ([`CircuitBreakerLayer`]) is always built: tower is already in every
//! consumer's tree.

mod breaker;
mod keyed;
mod layer;
mod registry;

pub use breaker::{BreakerConfig, CircuitBreaker, CircuitOpen, Permit, Snapshot, State};
pub use keyed::{
    BreakerPolicy, KeyedCircuitBreakerLayer, KeyedCircuitBreakerService, KeyedResponseFuture,
    Verdict,
};
pub use layer::{BoxError, CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};
pub use registry::{BreakerRegistry, StateChange};
