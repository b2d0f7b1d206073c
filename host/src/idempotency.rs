//! Single flight for copies of one delivery, and the clock that stamps
//! stored answers.
//!
//! Emailgistics retries on 5xx and connection errors, so copies of one
//! delivery can arrive while the first is still running. The first copy to
//! claim a key (route, payload id) is the leader and runs the plugins; the
//! others follow: they wait for the leader's answer and return it, so the
//! plugins run once. If the leader goes away without an answer (its
//! connection dropped mid-run), a follower claims the key and runs it
//! itself. Completed answers live in the [`crate::store`]; this module only
//! covers the window while a delivery is in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

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

type Slot = watch::Receiver<Option<Arc<Answer>>>;

/// The deliveries in flight.
#[derive(Default)]
pub struct Inflight {
    map: Mutex<HashMap<Key, Slot>>,
}

/// The result of claiming a key.
pub enum Claim {
    /// Nobody runs this delivery: the caller does, and must `finish`.
    Leader(Leader),
    /// Another copy is running it: wait on this for its answer.
    Follower(Slot),
}

/// The right (and duty) to run one delivery. Dropping it without
/// `finish` frees the key for a follower to take over.
pub struct Leader {
    key: Key,
    tx: watch::Sender<Option<Arc<Answer>>>,
    inflight: Arc<Inflight>,
}

impl Inflight {
    /// Claim `key`: leader if nobody holds it, else follower of the holder.
    pub fn claim(self: &Arc<Self>, key: Key) -> Claim {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(&key) {
            return Claim::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Claim::Leader(Leader {
            key,
            tx,
            inflight: self.clone(),
        })
    }

    /// Number of deliveries in flight.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no delivery is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Leader {
    /// Hand the answer to every follower and release the key.
    pub fn finish(self, answer: Arc<Answer>) {
        // Followers that subscribed already see the value; the key is
        // released on drop, after the value is visible.
        self.tx.send_replace(Some(answer));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.inflight
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Wait for the leader's answer. `None` when the leader went away without
/// one (the caller then claims the key again).
pub async fn follow(mut slot: Slot) -> Option<Arc<Answer>> {
    match slot.wait_for(Option::is_some).await {
        Ok(answer) => answer.clone(),
        Err(_) => None,
    }
}

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

    fn answer(status: u16) -> Arc<Answer> {
        Arc::new(Answer {
            status,
            body: Bytes::from_static(b"{}"),
            answered_at_ms: 1,
        })
    }

    fn key(id: &str) -> Key {
        ("/hook".to_owned(), id.to_owned())
    }

    #[tokio::test]
    async fn followers_get_the_leaders_answer_and_the_key_is_released() {
        let inflight = Arc::new(Inflight::default());
        let Claim::Leader(leader) = inflight.claim(key("a")) else {
            panic!("first claim leads")
        };
        let followers: Vec<_> = (0..3)
            .map(|_| match inflight.claim(key("a")) {
                Claim::Follower(slot) => tokio::spawn(follow(slot)),
                Claim::Leader(_) => panic!("a second leader"),
            })
            .collect();
        assert!(
            matches!(inflight.claim(key("b")), Claim::Leader(_)),
            "other keys are independent"
        );
        leader.finish(answer(200));
        for f in followers {
            assert_eq!(f.await.unwrap(), Some(answer(200)));
        }
        assert!(inflight.is_empty());
        assert!(matches!(inflight.claim(key("a")), Claim::Leader(_)));
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_lets_a_follower_take_over() {
        let inflight = Arc::new(Inflight::default());
        let leader = inflight.claim(key("a"));
        let Claim::Follower(slot) = inflight.claim(key("a")) else {
            panic!("second claim follows")
        };
        drop(leader);
        assert_eq!(follow(slot).await, None);
        assert!(matches!(inflight.claim(key("a")), Claim::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time() {
        let clock = Clock::new();
        let before = clock.now_ms();
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms() - before, 3_600_000);
    }
}
