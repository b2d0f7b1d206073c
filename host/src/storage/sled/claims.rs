//! The answers port on sled: the [`DeliveryStore`] for answers, and the
//! claims' leases in this process's memory.
//!
//! sled allows one process per database, so every copy of a delivery that
//! can see this store runs in this process: a lease here is a map entry
//! (key → token and expiry). A claim with a live lease is `Held`; an expired
//! one may be taken over. `complete` is fenced by the token: while it writes,
//! its entry is pinned (no expiry), so no claim can lead between the fence
//! check and the write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::answers::DeliveryStore;
use super::blocking;
use crate::clock::Clock;
use crate::storage::{
    AnswerStore, Claimed, Completed, DeliveryKey, DeliverySummary, LeaseToken, StorageError,
    StoredDelivery,
};

/// One lease: its token and when it ends (`None`: pinned by a `complete`
/// in progress).
struct Lease {
    token: String,
    until: Option<Instant>,
}

impl Lease {
    fn live(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// [`AnswerStore`] on sled.
pub struct SledAnswers {
    store: DeliveryStore,
    clock: Clock,
    leases: Mutex<HashMap<DeliveryKey, Lease>>,
    next_token: AtomicU64,
}

impl SledAnswers {
    /// The port over `store`, with `clock` for expiry.
    pub fn new(store: DeliveryStore, clock: Clock) -> Self {
        SledAnswers {
            store,
            clock,
            leases: Mutex::default(),
            next_token: AtomicU64::new(1),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryKey, Lease>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_token(&self) -> String {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", std::process::id())
    }

    /// Drop `key`'s lease if it still carries `token`.
    fn drop_lease(&self, key: &DeliveryKey, token: &str) {
        let mut leases = self.leases();
        if leases.get(key).is_some_and(|l| l.token == token) {
            leases.remove(key);
        }
    }

    /// One answer, read on tokio's blocking pool like every sled port call.
    ///
    /// Measured both ways (issue 11, release, this 2-core machine): alone, a
    /// read on the calling thread is cheaper (`tests/benches/delivery_store.rs`:
    /// 1.8 µs in place against 14–34 µs through the pool for a cached record,
    /// 8 µs against 45 µs for one whose page sled reads back), but under
    /// `wrk -c32` reading in place served 9 points fewer replays (47–48 % of
    /// bare hyper against 55–58 %, +4 µs CPU per delivery) and no more
    /// first deliveries. Through the pool, the two runtime workers go on
    /// with other connections while the read runs; and a page in neither
    /// sled's cache nor the OS's never holds a worker for a disk read.
    async fn read(&self, key: &DeliveryKey) -> Result<Option<StoredDelivery>, StorageError> {
        let (store, key, now) = (self.store.clone(), key.clone(), self.clock.now_ms());
        blocking(move || Ok(store.get(&key.route, &key.id, now)?)).await
    }
}

impl From<super::answers::StoreError> for StorageError {
    fn from(e: super::answers::StoreError) -> Self {
        use super::answers::StoreError;
        match e {
            StoreError::Corrupt { key, source } => StorageError::Corrupt {
                what: key,
                detail: source.to_string(),
            },
            e => StorageError::Unavailable(e.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl AnswerStore for SledAnswers {
    async fn get(&self, key: &DeliveryKey) -> Result<Option<StoredDelivery>, StorageError> {
        self.read(key).await
    }

    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claimed, StorageError> {
        // The lease first, then one read (a read costs a trip to the
        // blocking pool; the lease is a map entry). A key held by a live
        // lease is `Held` even if its leader has just stored its answer:
        // the caller polls again and replays it.
        let token = {
            let mut leases = self.leases();
            let now = Instant::now();
            if leases.get(key).is_some_and(|l| l.live(now)) {
                return Ok(Claimed::Held);
            }
            let token = self.new_token();
            leases.insert(
                key.clone(),
                Lease {
                    token: token.clone(),
                    until: Some(now + lease),
                },
            );
            token
        };
        // A leader writes its answer before it lets go of its lease, so an
        // answer stored before this lease was taken is seen here, and the
        // plugins do not run twice.
        match self.read(key).await {
            Ok(Some(answer)) => {
                self.drop_lease(key, &token);
                Ok(Claimed::Answered(answer))
            }
            Ok(None) => Ok(Claimed::Leader(LeaseToken {
                key: key.clone(),
                token,
            })),
            Err(e) => {
                self.drop_lease(key, &token);
                Err(e)
            }
        }
    }

    async fn complete(
        &self,
        lease: &LeaseToken,
        answer: &StoredDelivery,
    ) -> Result<Completed, StorageError> {
        /// What the fence check found.
        enum Fence {
            /// Ours (live, or expired but not taken): pinned for the write.
            Ours,
            /// Another copy's lease holds the key.
            Taken,
            /// No lease: ours ended and was taken and let go; taken again,
            /// pinned, but another copy may have answered meanwhile.
            Retaken,
        }
        let fence = {
            let mut leases = self.leases();
            match leases.get_mut(&lease.key) {
                Some(l) if l.token == lease.token => {
                    l.until = None;
                    Fence::Ours
                }
                Some(_) => Fence::Taken,
                None => {
                    leases.insert(
                        lease.key.clone(),
                        Lease {
                            token: lease.token.clone(),
                            until: None,
                        },
                    );
                    Fence::Retaken
                }
            }
        };
        match fence {
            Fence::Ours => {}
            Fence::Taken => {
                return Ok(match self.read(&lease.key).await? {
                    Some(stored) => Completed::Superseded(stored),
                    None => Completed::LeaseLost,
                });
            }
            Fence::Retaken => match self.read(&lease.key).await {
                Ok(None) => {}
                Ok(Some(stored)) => {
                    self.drop_lease(&lease.key, &lease.token);
                    return Ok(Completed::Superseded(stored));
                }
                Err(e) => {
                    self.drop_lease(&lease.key, &lease.token);
                    return Err(e);
                }
            },
        }
        let store = self.store.clone();
        let stored = answer.clone();
        let written = store.put(&stored).await.map_err(StorageError::from);
        self.drop_lease(&lease.key, &lease.token);
        written.map(|()| Completed::Stored)
    }

    async fn release(&self, lease: &LeaseToken) -> Result<(), StorageError> {
        self.drop_lease(&lease.key, &lease.token);
        Ok(())
    }

    async fn list(
        &self,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliverySummary>, StorageError> {
        let (store, now) = (self.store.clone(), self.clock.now_ms());
        blocking(move || Ok(store.list(since_ms, limit, now)?)).await
    }

    async fn find(
        &self,
        id: &str,
        route: Option<&str>,
    ) -> Result<Vec<StoredDelivery>, StorageError> {
        let (store, now) = (self.store.clone(), self.clock.now_ms());
        let (id, route) = (id.to_owned(), route.map(str::to_owned));
        blocking(move || Ok(store.find(&id, route.as_deref(), now)?)).await
    }

    async fn len(&self) -> Result<usize, StorageError> {
        // A kept count: no sled work, so no trip to the blocking pool.
        Ok(self.store.len())
    }
}
