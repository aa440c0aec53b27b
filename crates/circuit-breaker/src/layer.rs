//! A tower [`Layer`] that fails fast while the breaker is open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::breaker::{CircuitBreaker, CircuitOpen, Permit};

/// The boxed error of [`CircuitBreakerService`]: the inner error, or [`CircuitOpen`]
/// (find it with `err.downcast_ref::<CircuitOpen>()`). Same type as `tower::BoxError`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps a service with a shared [`CircuitBreaker`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl CircuitBreakerLayer {
    /// A layer using `breaker` (share it to guard several services as one target).
    pub fn new(breaker: Arc<CircuitBreaker>) -> CircuitBreakerLayer {
        CircuitBreakerLayer { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone())
    }
}

/// A service that asks the breaker before each call: an inner error counts as a failure, an
/// `Ok` as a success, and while open the call fails at once with [`CircuitOpen`] without
/// reaching the inner service.
///
/// Like tower's `LoadShed`, readiness is the inner service's: refusing happens in `call`, so a
/// caller never waits on an open breaker. A call whose future is dropped before it finishes
/// records nothing (and frees its half-open probe slot).
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

impl<S> CircuitBreakerService<S> {
    /// Wraps `inner` with `breaker`.
    pub fn new(inner: S, breaker: Arc<CircuitBreaker>) -> CircuitBreakerService<S> {
        CircuitBreakerService { inner, breaker }
    }

    /// The breaker guarding this service.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for CircuitBreakerService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let state = match self.breaker.try_acquire() {
            Ok(permit) => State::Called {
                fut: self.inner.call(req),
                permit: Some(permit),
            },
            Err(open) => State::Refused { open: Some(open) },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The future of [`CircuitBreakerService`]: the inner call, then its outcome recorded.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            fut: F,
            permit: Option<Permit>,
        },
        Refused {
            open: Option<CircuitOpen>,
        },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut, permit } => {
                let result = ready!(fut.poll(cx));
                // Taken once: a future polled again after completion records nothing twice.
                if let Some(permit) = permit.take() {
                    if result.is_ok() {
                        permit.success();
                    } else {
                        permit.failure();
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Refused { open } => {
                let open = open.take().unwrap_or(CircuitOpen {
                    retry_in: std::time::Duration::ZERO,
                });
                Poll::Ready(Err(Box::new(open)))
            }
        }
    }
}
