//! Single flight: the first caller for a key does the work, concurrent
//! callers for the same key wait for its result instead of repeating it.
//!
//! Used for copies of one delivery ([`crate::idempotency`]) and for concurrent
//! CRM misses of one key ([`crate::crm::cache`]). If the leader goes away
//! without a result (its task was cancelled), the key is released and a
//! follower learns it (`None`), so it can claim the key itself.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// Where a result arrives.
pub type Slot<V> = watch::Receiver<Option<V>>;

/// The keys being worked on.
pub struct SingleFlight<K, V> {
    map: Mutex<HashMap<K, Slot<V>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// The result of claiming a key.
pub enum Claim<K: Hash + Eq + Clone, V: Clone> {
    /// Nobody works on this key: the caller does, and must `finish`.
    Leader(Leader<K, V>),
    /// Someone does: wait on this for the result.
    Follower(Slot<V>),
}

/// The right (and duty) to do the work for one key. Dropping it without
/// `finish` frees the key.
pub struct Leader<K: Hash + Eq + Clone, V: Clone> {
    key: K,
    tx: watch::Sender<Option<V>>,
    flights: Arc<SingleFlight<K, V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// Claim `key`: leader if nobody holds it, else follower of the holder.
    pub fn claim(self: &Arc<Self>, key: K) -> Claim<K, V> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(&key) {
            return Claim::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Claim::Leader(Leader {
            key,
            tx,
            flights: self.clone(),
        })
    }

    /// Number of keys in flight.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Leader<K, V> {
    /// A slot on which the leader's own result arrives (for a leader that
    /// hands its work to another task and waits like a follower).
    pub fn slot(&self) -> Slot<V> {
        self.tx.subscribe()
    }

    /// Hand the result to every follower and release the key.
    pub fn finish(self, value: V) {
        // The value is visible before the key is released (on drop).
        self.tx.send_replace(Some(value));
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leader<K, V> {
    fn drop(&mut self) {
        self.flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Wait for the leader's result. `None` when the leader went away without one.
pub async fn follow<V: Clone>(mut slot: Slot<V>) -> Option<V> {
    match slot.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flights = Arc<SingleFlight<&'static str, u32>>;

    #[tokio::test]
    async fn followers_get_the_leaders_result_and_the_key_is_released() {
        let flights: Flights = Arc::default();
        let Claim::Leader(leader) = flights.claim("a") else {
            panic!("first claim leads")
        };
        let own = leader.slot();
        let followers: Vec<_> = (0..3)
            .map(|_| match flights.claim("a") {
                Claim::Follower(slot) => tokio::spawn(follow(slot)),
                Claim::Leader(_) => panic!("a second leader"),
            })
            .collect();
        assert!(
            matches!(flights.claim("b"), Claim::Leader(_)),
            "other keys are independent"
        );
        leader.finish(7);
        for f in followers {
            assert_eq!(f.await.unwrap(), Some(7));
        }
        assert_eq!(follow(own).await, Some(7));
        assert!(flights.is_empty());
        assert!(matches!(flights.claim("a"), Claim::Leader(_)));
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_lets_a_follower_take_over() {
        let flights: Flights = Arc::default();
        let leader = flights.claim("a");
        let Claim::Follower(slot) = flights.claim("a") else {
            panic!("second claim follows")
        };
        drop(leader);
        assert_eq!(follow(slot).await, None);
        assert!(matches!(flights.claim("a"), Claim::Leader(_)));
    }
}
