//! Concurrency caps: the permits a tool's calls hold while in flight.
//!
//! Owns the per-tool semaphore. It never waits for a permit: a call past the cap is
//! refused at once, with when to retry.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The concurrency cap of one tool: permits held for the length of a call.
#[derive(Debug, Clone)]
pub struct Cap {
    /// The cap.
    pub max: u32,
    permits: Arc<Semaphore>,
}

impl Cap {
    /// A cap of `max` calls in flight.
    pub fn new(max: u32) -> Self {
        Self {
            max,
            permits: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX))),
        }
    }

    /// A permit, or `None` when `max` calls are already in flight.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_refuses_beyond_max_and_frees_on_drop() {
        let cap = Cap::new(2);
        let a = cap.try_acquire().unwrap();
        let _b = cap.try_acquire().unwrap();
        assert!(cap.try_acquire().is_none());
        drop(a);
        assert!(cap.try_acquire().is_some());
    }
}
