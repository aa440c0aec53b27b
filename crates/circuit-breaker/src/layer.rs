//! A tower [`Layer`] that fails fast while the breaker is open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::breaker::CircuitBreaker;

/// The boxed error of [`CircuitBreakerService`]: the inner error, or [`crate::CircuitOpen`].
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
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// A service that asks the breaker before each call: an inner error counts as a failure, an
/// `Ok` as a success, and while open the call fails at once with [`crate::CircuitOpen`].
/// Like tower's `LoadShed`, it is always ready: refusing happens in `call`.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

impl<S, Req> Service<Req> for CircuitBreakerService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.breaker.try_acquire() {
            Ok(p) => p,
            Err(open) => return Box::pin(async move { Err(Box::new(open) as BoxError) }),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    permit.success();
                    Ok(resp)
                }
                Err(e) => {
                    permit.failure();
                    Err(e.into())
                }
            }
        })
    }
}
