//! The cap on open connections of a listener, with a small reserve that
//! answers only `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections accepted beyond `max_connections` that may still ask for
/// `/healthz` (everything else on them is answered 503). A load balancer
/// and a monitor probe a couple at a time; 8 covers them with margin for
/// 8 more descriptors. Beyond the reserve too, a connection is closed at
/// once.
pub const HEALTH_RESERVE_CONNECTIONS: usize = 8;

/// The cap on open connections of a listener: `max` ordinary slots, then
/// [`HEALTH_RESERVE_CONNECTIONS`] that answer only `/healthz` (a saturated
/// host still reports itself alive, and its senders get a clean 503), then
/// connections are closed as soon as they are accepted. Accepting and
/// closing (rather than not accepting) keeps the kernel's backlog from
/// holding connections that would only time out, and keeps the accept loop
/// free to serve the reserve. Cloning shares the counts.
#[derive(Clone)]
pub struct ConnectionCap {
    max: usize,
    slots: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

impl ConnectionCap {
    /// A cap of `max` connections plus the health reserve.
    pub fn new(max: usize) -> Self {
        ConnectionCap {
            max,
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            reserve: Arc::new(Semaphore::new(HEALTH_RESERVE_CONNECTIONS)),
            refused: Arc::default(),
        }
    }

    /// No cap beyond what a semaphore can count (the admin listener, which
    /// is loopback-only by default).
    pub fn unbounded() -> Self {
        Self::new(Semaphore::MAX_PERMITS)
    }

    /// The configured cap (`max_connections`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now, reserve ones included.
    pub fn open(&self) -> usize {
        let slots = self.max.min(Semaphore::MAX_PERMITS) - self.slots.available_permits();
        slots + HEALTH_RESERVE_CONNECTIONS - self.reserve.available_permits()
    }

    /// Connections closed at once because the cap and the reserve were full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A slot for a new connection: `(permit, false)` for an ordinary one,
    /// `(permit, true)` for a reserve one, `None` when all are taken.
    pub(super) fn admit(&self) -> Option<(OwnedSemaphorePermit, bool)> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some((permit, false));
        }
        if let Ok(permit) = self.reserve.clone().try_acquire_owned() {
            return Some((permit, true));
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_then_the_reserve_then_refusal() {
        let cap = ConnectionCap::new(2);
        let a = cap.admit().expect("first slot");
        let b = cap.admit().expect("second slot");
        assert!(!a.1 && !b.1, "ordinary slots first");
        let reserve: Vec<_> = (0..HEALTH_RESERVE_CONNECTIONS)
            .map(|_| cap.admit().expect("reserve slot"))
            .collect();
        assert!(reserve.iter().all(|(_, r)| *r), "then the reserve");
        assert_eq!(cap.open(), 2 + HEALTH_RESERVE_CONNECTIONS);
        assert!(cap.admit().is_none(), "then refused");
        assert_eq!(cap.refused(), 1);
        drop(a);
        let again = cap.admit().expect("a freed slot is taken again");
        assert!(!again.1, "an ordinary slot, not the reserve");
    }
}
