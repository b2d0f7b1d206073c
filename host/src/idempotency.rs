//! Idempotency's in-memory half: the answers of deliveries in flight, and
//! the clock that stamps and expires stored answers.
//!
//! Emailgistics retries on 5xx and connection errors, so copies of one
//! delivery can arrive while the first is still running. The first copy to
//! claim a key (route, payload id) is the leader and runs the plugins; the
//! others follow ([`crate::singleflight`]): they wait for the leader's answer
//! and return it, so the plugins run once. If the leader goes away without
//! an answer (its connection dropped mid-run), a follower claims the key and
//! runs it itself. Completed answers live in the [`crate::store`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::singleflight::SingleFlight;

/// An answer as sent: status and exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response body (JSON).
    pub body: Bytes,
    /// When it was first answered (unix ms).
    pub answered_at_ms: u64,
}

/// (route path, payload id).
pub type Key = (String, String);

/// Copies of deliveries in flight: the first copy of a key runs the chain,
/// later ones wait for its answer.
pub type Inflight = SingleFlight<Key, Arc<Answer>>;

/// Wall-clock milliseconds that advance with tokio's clock.
///
/// Stored answers carry wall-clock times (they must mean the same after a
/// restart), but retention is measured with this clock: it is read once at
/// start and then advanced by tokio's monotonic clock, so a wall-clock jump
/// (NTP, an operator) does not expire or resurrect answers, and tests can
/// move time with tokio's paused clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start_ms: u64,
    started: tokio::time::Instant,
}

impl Clock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall_at_start_ms: wall,
            started: tokio::time::Instant::now(),
        }
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.wall_at_start_ms + self.started.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time() {
        let clock = Clock::new();
        let before = clock.now_ms();
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms() - before, 3_600_000);
    }
}
