//! Group commit, written once: callers queue requests, a worker takes everything queued at
//! that moment (at least one, at most `max`, never waiting for a batch to fill), runs it as
//! one transaction ([`Batch::run`]) and answers every request after the commit.
//!
//! The SQLite writer thread and the PostgreSQL finishers and enqueuers are such workers.
//! Several workers may serve one queue: the one holding the queue's lock is the next to take a
//! batch, so they take turns and never split one burst between them. A worker stops when every
//! [`Batcher`] is gone or [`Batcher::close`] was called, after answering what was queued.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::StoreError;
use crate::store::StoreResult;

/// One transaction over a batch of requests.
pub(crate) trait Batch {
    /// What one caller asks for.
    type Work: Send;
    /// What one caller is answered.
    type Output: Send;
    /// Names the batcher in the log.
    const NAME: &'static str;

    /// Runs `work` in one transaction: the outcome of each request, in order, or the error
    /// that failed them all (nothing of the batch is then written).
    fn run(
        &mut self,
        work: Vec<Self::Work>,
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<Self::Output>>>> + Send;
}

struct Request<W, O> {
    work: W,
    reply: oneshot::Sender<StoreResult<O>>,
}

/// The callers' end: queues requests and waits for their answers.
pub(crate) struct Batcher<W, O> {
    sender: mpsc::UnboundedSender<Request<W, O>>,
    stop: CancellationToken,
}

/// The workers' end, shared by every worker of one queue.
pub(crate) struct Queue<W, O> {
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Request<W, O>>>>,
    stop: CancellationToken,
    max: usize,
}

impl<W, O> Clone for Queue<W, O> {
    fn clone(&self) -> Self {
        Queue {
            rx: self.rx.clone(),
            stop: self.stop.clone(),
            max: self.max,
        }
    }
}

/// A new queue whose batches hold at most `max` requests.
pub(crate) fn channel<W, O>(max: usize) -> (Batcher<W, O>, Queue<W, O>) {
    let (sender, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let queue = Queue {
        rx: Arc::new(Mutex::new(rx)),
        stop: stop.clone(),
        max: max.max(1),
    };
    (Batcher { sender, stop }, queue)
}

// === impl Batcher ===

impl<W, O> Batcher<W, O> {
    /// Queues `work` and waits for its batch to commit. [`StoreError::Closed`] when the
    /// workers are gone (closed, or their runtime shut down): an error, never a hang.
    pub(crate) async fn call(&self, work: W) -> StoreResult<O> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request { work, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Has the workers answer what is queued and stop; later calls are
    /// [`StoreError::Closed`].
    pub(crate) fn close(&self) {
        self.stop.cancel();
    }
}

// === impl Queue ===

impl<W: Send, O: Send> Queue<W, O> {
    /// Takes batches and runs them on `batch` until the queue is closed and drained.
    pub(crate) async fn serve<B: Batch<Work = W, Output = O>>(&self, batch: &mut B) {
        let mut taken = Vec::with_capacity(self.max);
        loop {
            {
                // Sleeps until a request arrives; then takes what is there now, without
                // waiting for more. The lock is released before the batch runs.
                let mut rx = self.rx.lock().await;
                let n = tokio::select! {
                    biased;
                    () = self.stop.cancelled() => {
                        rx.close();
                        rx.recv_many(&mut taken, self.max).await
                    }
                    n = rx.recv_many(&mut taken, self.max) => n,
                };
                if n == 0 {
                    return; // closed and drained
                }
            }
            let (work, replies): (Vec<W>, Vec<_>) =
                taken.drain(..).map(|r| (r.work, r.reply)).unzip();
            match batch.run(work).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        // A caller that stopped waiting no longer needs the answer.
                        let _ = reply.send(outcome);
                    }
                }
                Err(e) => {
                    let error = error_chain(&e);
                    tracing::warn!(%error, tasks = replies.len(), "{} batch failed", B::NAME);
                    let shared = SharedError::from(e);
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Backend(Box::new(shared.clone()))));
                    }
                }
            }
        }
    }
}

/// One error given to every request of a failed batch ([`StoreError`] is not `Clone`): its
/// message and source are the original's.
#[derive(Debug, Clone)]
pub(crate) struct SharedError(Arc<dyn std::error::Error + Send + Sync>);

impl From<StoreError> for SharedError {
    fn from(e: StoreError) -> SharedError {
        match e {
            StoreError::Backend(inner) => SharedError(Arc::from(inner)),
            other => SharedError(Arc::new(other)),
        }
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// An error and its sources on one line, for the log (a database error's detail, such as the
/// constraint, is in its source).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums each batch; fails a batch holding a zero.
    struct Sum(Vec<usize>);

    impl Batch for Sum {
        type Work = u32;
        type Output = usize;
        const NAME: &'static str = "test";

        async fn run(&mut self, work: Vec<u32>) -> StoreResult<Vec<StoreResult<usize>>> {
            self.0.push(work.len());
            if work.contains(&0) {
                return Err(StoreError::backend("zero"));
            }
            Ok(work.iter().map(|_| Ok(work.len())).collect())
        }
    }

    #[tokio::test]
    async fn queued_requests_share_a_batch_and_close_drains_them() {
        let (batcher, queue) = channel::<u32, usize>(8);
        let calls: Vec<_> = (1..=5).map(|i| batcher.call(i)).collect();
        let mut sum = Sum(Vec::new());
        let answers = async {
            let out = futures::future::join_all(calls).await;
            batcher.close();
            out
        };
        let ((), answers) = tokio::join!(queue.serve(&mut sum), answers);
        let answers: Vec<usize> = answers.into_iter().map(|a| a.expect("answered")).collect();
        assert_eq!(answers, vec![5; 5]);
        assert_eq!(sum.0, vec![5]);
        assert!(matches!(batcher.call(1).await, Err(StoreError::Closed)));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_request_in_it() {
        let (batcher, queue) = channel::<u32, usize>(8);
        let worker = tokio::spawn(async move { queue.serve(&mut Sum(Vec::new())).await });
        let (a, b) = tokio::join!(batcher.call(0), batcher.call(1));
        assert!(matches!(a, Err(StoreError::Backend(_))));
        assert!(matches!(b, Err(StoreError::Backend(_))));
        drop(batcher);
        worker
            .await
            .expect("the worker stops once every batcher is gone");
    }
}
