//! Idempotency's in-memory half: the answers of deliveries in flight on
//! this host.
//!
//! Emailgistics retries on 5xx and connection errors, so copies of one
//! delivery can arrive while the first is still running. The first copy to
//! claim a key (route, payload id) is the leader and runs the plugins; the
//! others follow ([`crate::singleflight`]): they wait for the leader's answer
//! and return it, so the plugins run once. If the leader goes away without
//! an answer (its connection dropped mid-run), a follower claims the key and
//! runs it itself. Completed answers live in the [`crate::store`].

use std::sync::Arc;

use bytes::Bytes;

use crate::singleflight::SingleFlight;

pub use crate::clock::Clock;

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
