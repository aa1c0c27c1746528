//! Running a call on the task of the request that made it, and finishing it on a task of
//! its own when that request's future is dropped first (the client went away): no
//! hand-off to another task and back per call, and a call is never stopped midway by a
//! disconnect.
//!
//! Owns that wrapper only; what the call is belongs to its caller.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A call run on the task that awaits it, finished on a task of its own if that task
/// drops it first (the client went away: hyper drops the request's future). A panic in
/// the call is its error, as a panic in a spawned task would be.
pub(super) struct Finish<T: Send + 'static> {
    call: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Finish<T> {
    pub(super) fn new(call: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            call: Some(Box::pin(call)),
        }
    }
}

impl<T: Send + 'static> Future for Finish<T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(Err("the call was polled after it finished".to_owned()));
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)));
        let out = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => Ok(out),
            Err(panic) => Err(panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the call panicked".to_owned())),
        };
        self.call = None;
        Poll::Ready(out)
    }
}

impl<T: Send + 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(call)),
                Err(e) => tracing::warn!(error = %e, "a call was dropped unfinished"),
            }
        }
    }
}
