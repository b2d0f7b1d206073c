//! The event-queue port and the maintenance on sled.
//!
//! The queue's leases live in this process's memory (a set of sequence
//! numbers with their expiry): one process owns the database, and after a
//! restart nothing is leased, so a callback that was being processed when
//! the host died is processed again (at least once). Event ids are the
//! sequence numbers, in decimal.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::answers::DeliveryStore;
use super::blocking;
use super::events::{self as queue, Queue, Queued};
use crate::clock::Clock;
use crate::storage::events::{self as port, EventQueue, QueuedEvent};
use crate::storage::{Maintenance, StorageError, SweepReport};

impl From<queue::QueueError> for StorageError {
    fn from(e: queue::QueueError) -> Self {
        match e {
            queue::QueueError::Corrupt { seq, detail } => StorageError::Corrupt {
                what: format!("queued callback {seq}"),
                detail,
            },
            e => StorageError::Unavailable(e.to_string()),
        }
    }
}

fn event_of(item: Queued) -> QueuedEvent {
    QueuedEvent {
        id: item.seq.to_string(),
        route: item.route,
        received_at_ms: item.received_at_ms,
        body: item.body,
        attempts: item.attempts,
        not_before_ms: item.not_before_ms,
    }
}

/// The sequence number an event id names (ids this backend handed out).
fn seq_of(event: &QueuedEvent) -> Result<u64, StorageError> {
    event.id.parse().map_err(|_| StorageError::Corrupt {
        what: format!("event id {:?}", event.id),
        detail: "not a sled sequence number".into(),
    })
}

/// [`EventQueue`] on sled.
pub struct SledEvents {
    queue: Queue,
    leased: Mutex<HashMap<u64, Instant>>,
}

impl SledEvents {
    /// The port over `queue`.
    pub fn new(queue: Queue) -> Self {
        SledEvents {
            queue,
            leased: Mutex::default(),
        }
    }

    fn leased(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.leased.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl EventQueue for SledEvents {
    async fn enqueue(
        &self,
        route: &str,
        body: &str,
        now_ms: u64,
    ) -> Result<port::Enqueued, port::QueueError> {
        match self.queue.enqueue(route, body, now_ms).await {
            Ok(queue::Enqueued::New(_)) => Ok(port::Enqueued::New),
            Ok(queue::Enqueued::Duplicate) => Ok(port::Enqueued::Duplicate),
            Err(queue::QueueError::Full(n)) => Err(port::QueueError::Full(n)),
            Err(e) => Err(port::QueueError::Storage(e.into())),
        }
    }

    async fn lease_next(&self, now_ms: u64, lease: Duration) -> Result<port::Next, StorageError> {
        loop {
            let skip: HashSet<u64> = {
                let mut leased = self.leased();
                let now = Instant::now();
                leased.retain(|_, until| *until > now);
                leased.keys().copied().collect()
            };
            let q = self.queue.clone();
            let found =
                blocking(move || Ok::<_, StorageError>(q.next_due_skipping(now_ms, &skip))).await?;
            match found {
                Ok(queue::Next::Due(item)) => {
                    let mut leased = self.leased();
                    let now = Instant::now();
                    if leased.get(&item.seq).is_some_and(|until| *until > now) {
                        continue; // leased meanwhile by another worker here
                    }
                    leased.insert(item.seq, now + lease);
                    return Ok(port::Next::Leased(event_of(item)));
                }
                Ok(queue::Next::Idle(earliest)) => return Ok(port::Next::Idle(earliest)),
                Err(queue::QueueError::Corrupt { seq, detail }) => {
                    // Left in place it would be met on every scan.
                    tracing::error!(seq, %detail, "dropping an unreadable queued EngageLab callback");
                    self.queue.done(seq).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn ack(&self, event: &QueuedEvent) -> Result<(), StorageError> {
        let seq = seq_of(event)?;
        let done = self.queue.done(seq).await;
        self.leased().remove(&seq);
        Ok(done?)
    }

    async fn retry_at(
        &self,
        event: &QueuedEvent,
        attempts: u32,
        not_before_ms: u64,
    ) -> Result<(), StorageError> {
        let seq = seq_of(event)?;
        let item = Queued {
            seq,
            route: event.route.clone(),
            received_at_ms: event.received_at_ms,
            body: event.body.clone(),
            attempts: event.attempts,
            not_before_ms: event.not_before_ms,
        };
        let moved = self.queue.move_back(&item, attempts, not_before_ms).await;
        self.leased().remove(&seq);
        match moved {
            Ok(()) | Err(queue::QueueError::NotQueued(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn len(&self) -> Result<usize, StorageError> {
        Ok(self.queue.len())
    }

    fn max_queued(&self) -> usize {
        self.queue.max_queued()
    }

    async fn head_received_ms(&self) -> Result<Option<u64>, StorageError> {
        let q = self.queue.clone();
        blocking(move || Ok(q.peek()?.map(|item| item.received_at_ms))).await
    }

    async fn seen_len(&self) -> Result<usize, StorageError> {
        let q = self.queue.clone();
        blocking(move || Ok(q.seen_len())).await
    }
}

/// [`Maintenance`] on sled: the answers' sweep every time; the duplicate
/// filter's and the last-known CRM values' at most every
/// [`queue::SEEN_SWEEP_EVERY`].
pub struct SledMaintenance {
    db: sled::Db,
    store: DeliveryStore,
    queue: Queue,
    clock: Clock,
    hourly_swept: Mutex<Option<Instant>>,
}

impl SledMaintenance {
    /// Maintenance of `db`'s answers and duplicate filter.
    pub fn new(db: sled::Db, store: DeliveryStore, queue: Queue, clock: Clock) -> Self {
        SledMaintenance {
            db,
            store,
            queue,
            clock,
            hourly_swept: Mutex::default(),
        }
    }

    /// Whether the hourly scans (duplicate filter, last-known CRM values)
    /// are due (and note they are being run now).
    fn hourly_due(&self) -> bool {
        let mut last = self
            .hourly_swept
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < queue::SEEN_SWEEP_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[async_trait::async_trait]
impl Maintenance for SledMaintenance {
    async fn sweep(&self) -> Result<SweepReport, StorageError> {
        let now = self.clock.now_ms();
        let mut report = SweepReport::default();
        // One bounded step per trip to the blocking pool, yielding between
        // them: a sweep of a busy day's expiries (tens of thousands of
        // answers) never holds sled's writers or a blocking thread for long.
        loop {
            let store = self.store.clone();
            let step = blocking(move || Ok::<_, StorageError>(store.sweep_step(now)?)).await?;
            report.expired += step.expired;
            report.evicted += step.evicted;
            if step.done {
                break;
            }
            tokio::task::yield_now().await;
        }
        report.remaining = self.store.len();
        // The scans of whole trees, hourly: fingerprints out of the dedupe
        // window, and last-known CRM values past their TTL.
        if self.hourly_due() {
            let (q, db) = (self.queue.clone(), self.db.clone());
            let (seen, crm) = blocking(move || {
                Ok::<_, StorageError>((q.sweep_seen(now)?, super::crm::sweep(&db, now)?))
            })
            .await?;
            report.seen_forgotten = seen;
            report.crm_expired = crm;
        }
        Ok(report)
    }

    async fn bytes_on_disk(&self) -> Option<u64> {
        let db = self.db.clone();
        blocking(move || Ok::<_, StorageError>(db.size_on_disk()?))
            .await
            .ok()
    }
}
