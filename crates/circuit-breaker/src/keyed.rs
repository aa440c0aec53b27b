//! A tower [`Layer`] guarding each call with the breaker of its key, from a shared
//! [`BreakerRegistry`]: one layer in front of many targets.
//!
//! Unlike [`CircuitBreakerLayer`](crate::CircuitBreakerLayer), whose inner `Ok`/`Err` decides,
//! a [`BreakerPolicy`] reads the answer: a delivery whose report says "HTTP 503" is an `Ok`
//! response to its caller but a failure of the target, and a request refused before it was sent
//! says nothing about the target at all. While a key's breaker is open, the policy also makes
//! the answer the caller gets instead (a report, a deferral), so the service's error type stays
//! the inner one and no caller has to downcast.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::breaker::{CircuitOpen, Permit};
use crate::registry::BreakerRegistry;

/// What an answer says about its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target is up.
    Success,
    /// The target failed.
    Failure,
    /// The target failed and asked to wait this long (`Retry-After`): the breaker opens for it.
    FailureRetryAfter(Duration),
    /// Nothing reached the target (refused locally, rate-limited, cancelled): record nothing.
    Ignore,
}

/// How a [`KeyedCircuitBreakerService`] reads its requests and their answers.
pub trait BreakerPolicy<Req, Resp> {
    /// The registry's key type.
    type Key: Eq + Hash + Clone + Send + Sync + 'static;

    /// Whose breaker guards `req`; `None`: the call goes through unguarded.
    fn key(&self, req: &Req) -> Option<Self::Key>;

    /// What `resp` says about the target.
    fn verdict(&self, resp: &Resp) -> Verdict;

    /// The answer while `req`'s breaker is open (the inner service is not called).
    fn refused(&self, req: Req, open: CircuitOpen) -> Resp;
}

/// Guards a service with one breaker per key of a shared registry.
#[derive(Debug)]
pub struct KeyedCircuitBreakerLayer<P, K> {
    registry: Arc<BreakerRegistry<K>>,
    policy: P,
}

impl<P: Clone, K> Clone for KeyedCircuitBreakerLayer<P, K> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            registry: self.registry.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<P, K> KeyedCircuitBreakerLayer<P, K> {
    /// A layer asking `registry`'s breakers, reading answers with `policy`.
    pub fn new(registry: Arc<BreakerRegistry<K>>, policy: P) -> Self {
        KeyedCircuitBreakerLayer { registry, policy }
    }
}

impl<S, P: Clone, K> Layer<S> for KeyedCircuitBreakerLayer<P, K> {
    type Service = KeyedCircuitBreakerService<S, P, K>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreakerService {
            inner,
            registry: self.registry.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The service of [`KeyedCircuitBreakerLayer`]. Readiness is the inner service's; an inner
/// error counts as a failure; a call dropped before it finishes records nothing (and frees its
/// half-open probe slot).
#[derive(Debug)]
pub struct KeyedCircuitBreakerService<S, P, K> {
    inner: S,
    registry: Arc<BreakerRegistry<K>>,
    policy: P,
}

impl<S: Clone, P: Clone, K> Clone for KeyedCircuitBreakerService<S, P, K> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerService {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S, P, K> KeyedCircuitBreakerService<S, P, K> {
    /// The registry whose breakers guard this service.
    pub fn registry(&self) -> &Arc<BreakerRegistry<K>> {
        &self.registry
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, P, Req> Service<Req> for KeyedCircuitBreakerService<S, P, P::Key>
where
    S: Service<Req>,
    P: BreakerPolicy<Req, S::Response> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = KeyedResponseFuture<S::Future, P, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.policy.key(&req) {
            None => None,
            Some(key) => match self.registry.try_acquire(&key) {
                Ok(permit) => Some(permit),
                Err(open) => {
                    return KeyedResponseFuture {
                        state: KeyedState::Refused {
                            resp: Some(self.policy.refused(req, open)),
                        },
                    };
                }
            },
        };
        KeyedResponseFuture {
            state: KeyedState::Called {
                fut: self.inner.call(req),
                permit,
                policy: self.policy.clone(),
                // The future does not know the request type; this names the policy's
                // verdict for it.
                verdict: <P as BreakerPolicy<Req, S::Response>>::verdict,
            },
        }
    }
}

pin_project! {
    /// The future of [`KeyedCircuitBreakerService`].
    pub struct KeyedResponseFuture<F, P, R> {
        #[pin]
        state: KeyedState<F, P, R>,
    }
}

pin_project! {
    #[project = KeyedStateProj]
    enum KeyedState<F, P, R> {
        Called {
            #[pin]
            fut: F,
            permit: Option<Permit>,
            policy: P,
            verdict: fn(&P, &R) -> Verdict,
        },
        Refused {
            resp: Option<R>,
        },
    }
}

impl<F, P, R> std::fmt::Debug for KeyedResponseFuture<F, P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            KeyedState::Called { .. } => "called",
            KeyedState::Refused { .. } => "refused",
        };
        f.debug_struct("KeyedResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Reports `verdict` on `permit`.
fn record(permit: Permit, verdict: Verdict) {
    match verdict {
        Verdict::Success => permit.success(),
        Verdict::Failure => permit.failure(),
        Verdict::FailureRetryAfter(wait) => permit.failure_with_retry_after(wait),
        Verdict::Ignore => drop(permit),
    }
}

impl<F, P, R, E> Future for KeyedResponseFuture<F, P, R>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            KeyedStateProj::Called {
                fut,
                permit,
                policy,
                verdict,
            } => {
                let result = ready!(fut.poll(cx));
                // Taken once: a future polled again after completion records nothing twice.
                if let Some(permit) = permit.take() {
                    let verdict = match &result {
                        Ok(resp) => verdict(policy, resp),
                        Err(_) => Verdict::Failure,
                    };
                    record(permit, verdict);
                }
                Poll::Ready(result)
            }
            KeyedStateProj::Refused { resp } => match resp.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => panic!("KeyedResponseFuture polled after completion"),
            },
        }
    }
}
