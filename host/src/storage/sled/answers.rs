//! Answered deliveries in sled: idempotency for retried deliveries, and the
//! delivery log (`enrichd deliveries list/show`, `GET /deliveries/ID`). The
//! answers port is put on it by [`super::claims`].
//!
//! # What it stores
//!
//! Emailgistics retries a delivery on a 5xx or a connection error, so the
//! same payload can arrive more than once. The first completed answer for a
//! (route path, payload id) pair is stored as a [`StoredDelivery`]: the HTTP
//! status, the exact response body, and the full outcome record. A later copy
//! within the retention window is answered from here, byte for byte, so the
//! plugins are not run twice and the sender sees one consistent answer.
//!
//! # Layout: two trees in the shared sled database
//!
//! - `deliveries`: key `route ++ 0x00 ++ id`, value the
//!   [`StoredDelivery`] in the stored format of [`crate::storage::codec`]
//!   (older JSON values still read). Route paths never contain NUL, so the
//!   first NUL ends the route and the id may hold any bytes. All keys of one route are
//!   contiguous, which lets [`DeliveryStore::find`] visit each route with one
//!   seek instead of scanning every record.
//! - `deliveries-by-time`: key `stored_at_ms` (8 bytes, big-endian) `++`
//!   records key, empty value. Big-endian makes byte order time order, so
//!   expiry and eviction read the oldest entries first and listings read the
//!   newest first, without decoding anything.
//!
//! Both trees change together in one sled transaction; replacing a record
//! removes its old time entry in the same transaction. Readers still check
//! that a time entry's stamp matches the record it names, so an entry left
//! behind by a corrupt record is skipped (and later swept) instead of
//! reported twice.
//!
//! # Durability
//!
//! With [`FlushPolicy::Always`] (the default), [`DeliveryStore::put`] waits
//! for sled to fsync before returning. The caller stores the answer before
//! writing the response, so whatever the sender may have seen survives a
//! crash, and its retry is replayed rather than re-run.
//!
//! Every put goes through the store's writer thread (group commit, see
//! [`super::commit`]): the puts queued while it commits and flushes one
//! batch become the next batch, one transaction over both trees and one
//! flush begun after it, and each caller returns after that flush. Under
//! load, concurrent answers share their fsync instead of each paying one;
//! a lone answer is written at once. With
//! [`FlushPolicy::Periodic`] the store relies on sled's background flush
//! (`flush_every_ms`, configured where the database is opened): cheaper, but
//! a crash loses up to that window of answers.
//!
//! # Expiry and bounds
//!
//! A record is live while `stored_at_ms + retention > now_ms`. Expired
//! records are invisible to every read at once, and removed by
//! [`DeliveryStore::sweep`], which the caller runs periodically (reads never
//! write, so they stay cheap). The sweep also evicts the oldest records
//! beyond `max_records`, bounding the disk used whatever the traffic.
//!
//! A sweep reads only the oldest end of the time index and works in steps
//! of [`SWEEP_BATCH`] entries ([`DeliveryStore::sweep_step`]), so its cost
//! follows what it removes, not the store's size, and no step holds the
//! other writers for long. The number of records is a count kept by every
//! write (one walk of the index keys at open), since sled's `len()` walks
//! the whole tree.

use std::convert::Infallible;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionResult, TransactionError};
use sled::{IVec, Transactional};

/// Name of the tree holding the records.
const RECORDS_TREE: &str = "deliveries";
/// Name of the time index tree.
const BY_TIME_TREE: &str = "deliveries-by-time";
/// Separator between route and id in a records key.
const SEP: u8 = 0x00;
/// Index entries handled per sweep step (one transaction): big enough to
/// amortise the transaction, small enough that the writes it holds up (a
/// sled transaction excludes other writers while it commits) wait well
/// under a millisecond or two, and that its write set stays small.
pub const SWEEP_BATCH: usize = 256;
/// Puts waiting for the writer, at most. A queued put is a delivery whose
/// plugins have run and whose answer waits to be stored, so the deliveries
/// in flight (capped by `max_connections`, 1024 by default) bound it
/// already: at that size a caller waits for room only past the default
/// cap. Each queued put is the compressed copy of an answer its delivery
/// still holds (a few hundred bytes for the example chain's), so the queue
/// at most adds a fraction to what the deliveries in flight hold anyway.
const WRITE_QUEUE: usize = 1024;
/// Puts per transaction, at most: the writer takes every queued put up to
/// this many. A transaction holds its write set in memory and, like a sweep
/// step, keeps the other writers out while it commits; under the default
/// connection cap a batch is rarely bigger than the connections that wait.
const WRITE_BATCH: usize = SWEEP_BATCH;
/// The writer thread's name (in `top -H`, perf and panics).
const WRITER_THREAD: &str = "enrichd-answers";

use super::commit::GroupCommit;
use crate::storage::answers::StoreSettings;
use crate::storage::codec::{self, CodecError};
use crate::storage::{DeliverySummary, FlushPolicy, StoredDelivery, SweepReport};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption of its own files, …).
    #[error("delivery store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("delivery store: corrupt record {key}: {source}")]
    Corrupt {
        /// The record's key, as `route id`.
        key: String,
        /// Decoding error.
        source: CodecError,
    },
}

/// The store of answered deliveries (cheap to clone: sled handles are
/// shared, and so is the writer, which stops with the last clone).
#[derive(Clone)]
pub struct DeliveryStore {
    db: sled::Db,
    records: sled::Tree,
    by_time: sled::Tree,
    settings: StoreSettings,
    /// Entries of the time index (one per stored record), kept by every
    /// write. sled's `len()` walks the whole tree, pulling every page
    /// through the cache; counting on each sweep and `/stats` made the cost
    /// (and the memory) of both grow with the store. Signed: a write's
    /// change lands after its transaction commits, so a removal can be
    /// counted before the insertion it undoes; clamping at zero there would
    /// lose it for good.
    indexed: Arc<AtomicIsize>,
    /// Flushes done by the writer (see [`DeliveryStore::flushes`]).
    flushes: Arc<AtomicU64>,
    /// Every put goes through it (see [`Writer`]).
    writer: Arc<GroupCommit<Put, sled::Error>>,
}

/// One answer to store, encoded by its caller (so the writer thread does
/// only the sled work).
struct Put {
    rkey: Vec<u8>,
    tkey: Vec<u8>,
    value: Vec<u8>,
}

/// The writer thread's part of the store: it applies each batch of puts in
/// one transaction over both trees and, with [`FlushPolicy::Always`], one
/// flush after it (group commit, see [`super::commit`]). One sled
/// transaction and one flush cost about as much for a batch as for a single
/// put, and the flush is what the answers wait for.
struct Writer {
    db: sled::Db,
    records: sled::Tree,
    by_time: sled::Tree,
    indexed: Arc<AtomicIsize>,
    flushes: Arc<AtomicU64>,
    flush: FlushPolicy,
}

impl Writer {
    fn write(&self, puts: &[Put]) -> Result<(), sled::Error> {
        // The closure may run more than once: the count moves by what the
        // committed run returns (+1 per entry added, -1 per entry removed).
        // A key put twice in one batch is replaced within the transaction
        // (its reads see its own writes), so the count holds there too.
        let added = (&self.records, &self.by_time)
            .transaction(
                |(records, by_time)| -> ConflictableTransactionResult<isize, Infallible> {
                    let mut added = 0;
                    for put in puts {
                        if let Some(old) =
                            records.insert(put.rkey.as_slice(), put.value.as_slice())?
                        {
                            // Drop the replaced answer's time entry, or the key
                            // would be indexed twice. An undecodable old value
                            // leaves its entry behind; readers skip it and sweep
                            // removes it.
                            if let Some(old_stamp) = stamp_of(&old) {
                                if by_time.remove(time_key(old_stamp, &put.rkey))?.is_some() {
                                    added -= 1;
                                }
                            }
                        }
                        if by_time.insert(put.tkey.as_slice(), Vec::new())?.is_none() {
                            added += 1;
                        }
                    }
                    Ok(added)
                },
            )
            .map_err(tx_error)?;
        self.indexed.fetch_add(added, Ordering::Relaxed);
        if self.flush == FlushPolicy::Always {
            // On this thread, not sled's `flush_async` (see [`flush`]).
            self.db.flush()?;
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// What one [`DeliveryStore::sweep_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepStep {
    /// Expired records removed.
    pub expired: usize,
    /// Unexpired records removed to respect `max_records`.
    pub evicted: usize,
    /// Whether nothing is left to do (no expired record, not over the bound).
    pub done: bool,
}

impl DeliveryStore {
    /// Open the two trees (`deliveries` and `deliveries-by-time`) in `db`.
    ///
    /// Counts the time index once (keys only, no record is read): the one
    /// full walk of the store, at start; every later count is kept by the
    /// writes.
    pub fn open(db: &sled::Db, settings: StoreSettings) -> Result<Self, StoreError> {
        let by_time = db.open_tree(BY_TIME_TREE)?;
        let mut indexed = 0;
        for key in by_time.iter().keys() {
            key?;
            indexed += 1;
        }
        let writer = Writer {
            db: db.clone(),
            records: db.open_tree(RECORDS_TREE)?,
            by_time,
            indexed: Arc::new(AtomicIsize::new(indexed)),
            flushes: Arc::default(),
            flush: settings.flush,
        };
        let store = DeliveryStore {
            db: writer.db.clone(),
            records: writer.records.clone(),
            by_time: writer.by_time.clone(),
            settings,
            indexed: writer.indexed.clone(),
            flushes: writer.flushes.clone(),
            writer: Arc::new(
                GroupCommit::spawn(WRITER_THREAD, WRITE_QUEUE, WRITE_BATCH, move |puts| {
                    writer.write(puts)
                })
                .map_err(sled::Error::Io)?,
            ),
        };
        Ok(store)
    }

    /// The stored answer for (route, id) if it has not expired at `now_ms`
    /// (`stored_at_ms + retention > now_ms`). An expired one is absent; the
    /// next sweep removes it.
    pub fn get(
        &self,
        route: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<Option<StoredDelivery>, StoreError> {
        let key = record_key(route, id);
        let Some(value) = self.records.get(&key)? else {
            return Ok(None);
        };
        let delivery = decode(&key, &value)?;
        Ok(self
            .is_live(delivery.stored_at_ms, now_ms)
            .then_some(delivery))
    }

    /// Store (insert or replace) in both trees atomically, then with
    /// [`FlushPolicy::Always`] wait for the data to reach the disk.
    ///
    /// The write is the store's writer's ([`Writer`]): concurrent puts share
    /// its transaction and its flush, and this returns once the batch
    /// holding this answer is committed (and, with `Always`, flushed by a
    /// flush begun after the commit).
    pub async fn put(&self, delivery: &StoredDelivery) -> Result<(), StoreError> {
        debug_assert!(
            !delivery.route.contains('\0'),
            "route paths never contain NUL"
        );
        let rkey = record_key(&delivery.route, &delivery.id);
        let put = Put {
            tkey: time_key(delivery.stored_at_ms, &rkey),
            rkey,
            value: codec::encode(delivery),
        };
        Ok(self.writer.submit(put).await?)
    }

    /// Flushes done by the store's writer since it was opened: with
    /// [`FlushPolicy::Always`], at most one per put, fewer when puts share
    /// them (for tests and benches).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Remove every record expired at `now_ms` (oldest first, stopping at the
    /// first unexpired), then evict the oldest until at most `max_records`
    /// remain: [`Self::sweep_step`] until it is done.
    pub fn sweep(&self, now_ms: u64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        loop {
            let step = self.sweep_step(now_ms)?;
            report.expired += step.expired;
            report.evicted += step.evicted;
            if step.done {
                report.remaining = self.len();
                return Ok(report);
            }
        }
    }

    /// One bounded step of a sweep: at most [`SWEEP_BATCH`] of the oldest
    /// entries, removed because they expired or, when none is expired and
    /// the store holds more than `max_records`, to get back under it. A
    /// caller that must not hold sled for long (the server's sweeper) runs
    /// one step at a time and lets other work in between.
    pub fn sweep_step(&self, now_ms: u64) -> Result<SweepStep, StoreError> {
        let mut expired = Vec::new();
        for key in self.by_time.iter().keys() {
            let key = key?;
            if let Some((stamp, _)) = split_time_key(&key) {
                if self.is_live(stamp, now_ms) {
                    break;
                }
            }
            // Expired, or a malformed entry (removed all the same).
            expired.push(key);
            if expired.len() == SWEEP_BATCH {
                break;
            }
        }
        if !expired.is_empty() {
            let removed = self.remove_indexed(&expired)?;
            return Ok(SweepStep {
                expired: removed,
                evicted: 0,
                done: false,
            });
        }
        let over = self.len().saturating_sub(self.settings.max_records);
        if over == 0 {
            return Ok(SweepStep {
                done: true,
                ..SweepStep::default()
            });
        }
        let oldest = self
            .by_time
            .iter()
            .keys()
            .take(over.min(SWEEP_BATCH))
            .collect::<Result<Vec<_>, _>>()?;
        if oldest.is_empty() {
            // The count says more than the index holds (it cannot, but a
            // sweep must end whatever the count says).
            return Ok(SweepStep {
                done: true,
                ..SweepStep::default()
            });
        }
        let evicted = self.remove_indexed(&oldest)?;
        Ok(SweepStep {
            expired: 0,
            evicted,
            done: false,
        })
    }

    /// Number of records (expired ones included until swept), as the time
    /// index counts them: O(1), kept by every write.
    pub fn len(&self) -> usize {
        usize::try_from(self.indexed.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Whether there are no records at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn count_added(&self, added: isize) {
        self.indexed.fetch_add(added, Ordering::Relaxed);
    }

    /// Bytes on disk of the whole sled database, for reporting.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Unexpired records stored at or after `since_ms`, newest first, at most
    /// `limit`.
    pub fn list(
        &self,
        since_ms: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let from = since_ms.max(self.live_from(now_ms));
        for key in self.by_time.range(from.to_be_bytes()..).keys().rev() {
            let key = key?;
            let Some((stamp, rkey)) = split_time_key(&key) else {
                continue;
            };
            let Some(value) = self.records.get(rkey)? else {
                continue; // removed since we read the index
            };
            let d = decode(rkey, &value)?;
            if d.stored_at_ms != stamp || !self.is_live(stamp, now_ms) {
                continue; // stale time entry
            }
            let message = d
                .record
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            out.push(DeliverySummary {
                route: d.route,
                id: d.id,
                stored_at_ms: d.stored_at_ms,
                status: d.status,
                message,
            });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every unexpired record with this payload id (any route), newest first;
    /// with `route`, only that route's.
    pub fn find(
        &self,
        id: &str,
        route: Option<&str>,
        now_ms: u64,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        if let Some(route) = route {
            return Ok(self.get(route, id, now_ms)?.into_iter().collect());
        }
        // Ids are not indexed on their own, but keys are grouped by route and
        // routes are few: visit each route with one seek and look the id up
        // directly. No third index to maintain on every put, and no scan of
        // every record on `GET /deliveries/ID`.
        let mut out = Vec::new();
        let mut next: Vec<u8> = Vec::new();
        while let Some(item) = self.records.range(next.as_slice()..).next() {
            let (key, _) = item?;
            let Some(nul) = key.iter().position(|&b| b == SEP) else {
                // Not one of ours; step just past it.
                next = [&key[..], &[SEP]].concat();
                continue;
            };
            let route = &key[..nul];
            let rkey = [route, &[SEP], id.as_bytes()].concat();
            if let Some(value) = self.records.get(&rkey)? {
                let d = decode(&rkey, &value)?;
                if self.is_live(d.stored_at_ms, now_ms) {
                    out.push(d);
                }
            }
            // Smallest key after every `route ++ 0x00 ++ …`: the next route.
            next = [route, &[SEP + 1]].concat();
        }
        out.sort_by(|a, b| {
            b.stored_at_ms
                .cmp(&a.stored_at_ms)
                .then_with(|| a.route.cmp(&b.route))
        });
        Ok(out)
    }

    /// Remove the given time entries and, for each, the record it names if
    /// that record still carries the entry's stamp (a concurrent `put` may
    /// have replaced it with a newer answer, which must stay). Returns the
    /// number of records removed.
    fn remove_indexed(&self, time_keys: &[IVec]) -> Result<usize, StoreError> {
        if time_keys.is_empty() {
            return Ok(0);
        }
        let (removed, unindexed) = (&self.records, &self.by_time)
            .transaction(
                |(records, by_time)| -> ConflictableTransactionResult<(usize, usize), Infallible> {
                    let (mut removed, mut unindexed) = (0, 0);
                    for tkey in time_keys {
                        if by_time.remove(tkey.clone())?.is_some() {
                            unindexed += 1;
                        }
                        let Some((stamp, rkey)) = split_time_key(tkey) else {
                            continue;
                        };
                        if let Some(value) = records.get(rkey)? {
                            // An undecodable record is removed with its entry.
                            if stamp_of(&value).is_none_or(|s| s == stamp) {
                                records.remove(rkey)?;
                                removed += 1;
                            }
                        }
                    }
                    Ok((removed, unindexed))
                },
            )
            .map_err(tx_error)?;
        self.count_added(-isize::try_from(unindexed).unwrap_or(isize::MAX));
        Ok(removed)
    }

    fn retention_ms(&self) -> u64 {
        u64::try_from(self.settings.retention.as_millis()).unwrap_or(u64::MAX)
    }

    fn is_live(&self, stored_at_ms: u64, now_ms: u64) -> bool {
        stored_at_ms.saturating_add(self.retention_ms()) > now_ms
    }

    /// The oldest stamp still live at `now_ms`.
    fn live_from(&self, now_ms: u64) -> u64 {
        now_ms
            .checked_sub(self.retention_ms())
            .map_or(0, |cutoff| cutoff.saturating_add(1))
    }
}

fn record_key(route: &str, id: &str) -> Vec<u8> {
    [route.as_bytes(), &[SEP], id.as_bytes()].concat()
}

fn time_key(stored_at_ms: u64, record_key: &[u8]) -> Vec<u8> {
    [&stored_at_ms.to_be_bytes()[..], record_key].concat()
}

/// Split a time key into its stamp and records key.
fn split_time_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (stamp, rkey) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*stamp), rkey))
}

/// A records key for messages: `route id`.
fn display_key(record_key: &[u8]) -> String {
    String::from_utf8_lossy(record_key).replacen('\0', " ", 1)
}

fn decode(record_key: &[u8], value: &[u8]) -> Result<StoredDelivery, StoreError> {
    let corrupt = |source| StoreError::Corrupt {
        key: display_key(record_key),
        source,
    };
    // Keys are written from `&str`s, so both halves are UTF-8.
    let (route, id) = std::str::from_utf8(record_key)
        .ok()
        .and_then(|key| key.split_once(char::from(SEP)))
        .ok_or_else(|| corrupt(CodecError::Malformed("record key is not route NUL id")))?;
    codec::decode(route, id, value).map_err(corrupt)
}

/// Just the stamp of a stored record, from its header (no decompression).
fn stamp_of(value: &[u8]) -> Option<u64> {
    codec::stored_at_ms(value)
}

fn tx_error(e: TransactionError<Infallible>) -> sled::Error {
    match e {
        TransactionError::Abort(never) => match never {},
        TransactionError::Storage(e) => e,
    }
}

/// Wait until every write to `db` so far is on disk.
///
/// Not sled's `flush_async`: in sled 0.34.7 it runs the flush on sled's own
/// IO pool, where concurrent flushes can take every thread while they wait
/// for a log write queued on that same pool, and then never finish (sled
/// issues #1241 and #1308, fixed on sled's main branch but never released).
/// The blocking `flush` on tokio's blocking pool leaves sled's pool free to
/// write. Used by every store that must be durable before it answers.
pub(crate) async fn flush(db: &sled::Db) -> Result<(), sled::Error> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(flushed) => flushed.map(|_| ()),
        Err(e) => Err(sled::Error::Io(std::io::Error::other(e))),
    }
}

#[cfg(test)]
mod commit_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::storage::answers::{DEFAULT_MAX_RECORDS, DEFAULT_RETENTION};
    use crate::storage::sled::test_util::{copy_dir, reopen, temp_db, unflushed_db};
    use crate::storage::DEFAULT_FLUSH;
    use serde_json::json;

    pub(super) const HOUR_MS: u64 = 60 * 60 * 1000;
    pub(super) const T0: u64 = 1_700_000_000_000;

    pub(super) fn settings(
        retention_ms: u64,
        max_records: usize,
        flush: FlushPolicy,
    ) -> StoreSettings {
        StoreSettings {
            retention: Duration::from_millis(retention_ms),
            max_records,
            flush,
        }
    }

    fn hour_store(db: &sled::Db) -> DeliveryStore {
        DeliveryStore::open(db, settings(HOUR_MS, 1000, FlushPolicy::Always)).unwrap()
    }

    pub(super) fn delivery(route: &str, id: &str, at: u64) -> StoredDelivery {
        StoredDelivery {
            route: route.into(),
            id: id.into(),
            stored_at_ms: at,
            status: 200,
            body: format!("{{\"id\":\"{id}\",\"at\":{at}}}"),
            record: json!({ "message": format!("{id}@{at}"), "plugins": [] }),
        }
    }

    fn ids(list: &[DeliverySummary]) -> Vec<&str> {
        list.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn defaults_and_policy_names() {
        assert_eq!(DEFAULT_RETENTION, Duration::from_secs(72 * 3600));
        assert_eq!(DEFAULT_MAX_RECORDS, 1_000_000);
        assert_eq!(DEFAULT_FLUSH, FlushPolicy::Always);
        let p: FlushPolicy = serde_json::from_str("\"periodic\"").unwrap();
        assert_eq!(p, FlushPolicy::Periodic);
        let a: FlushPolicy = serde_json::from_str("\"always\"").unwrap();
        assert_eq!(a, FlushPolicy::Always);
    }

    #[test]
    fn key_layout() {
        let rkey = record_key("/hook", "a\0b");
        assert_eq!(rkey, b"/hook\0a\0b");
        let tkey = time_key(0x0102_0304_0506_0708, &rkey);
        assert_eq!(&tkey[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            split_time_key(&tkey),
            Some((0x0102_0304_0506_0708, &rkey[..]))
        );
        assert_eq!(split_time_key(b"short"), None);
        // Byte order of time keys is time order.
        assert!(time_key(255, b"z") < time_key(256, b"a"));
        assert_eq!(display_key(&rkey), "/hook a\0b");
    }

    #[test]
    fn stamp_is_read_from_the_stored_value() {
        let d = delivery("/hook", "x", T0);
        assert_eq!(stamp_of(&codec::encode(&d)), Some(T0));
        // Values written before the codec: their JSON.
        let json = serde_json::to_vec(&d).unwrap();
        assert_eq!(stamp_of(&json), Some(T0));
        assert_eq!(stamp_of(b"not json"), None);
    }

    #[tokio::test]
    async fn values_are_stored_in_the_codec_format() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        let d = delivery("/hook", "x", T0);
        store.put(&d).await.unwrap();
        let raw = store
            .records
            .get(record_key("/hook", "x"))
            .unwrap()
            .unwrap();
        assert_eq!(raw[0], codec::VERSION_1);
        assert_eq!(&raw[..], &codec::encode(&d)[..]);
    }

    #[tokio::test]
    async fn answers_stored_as_json_before_the_codec_are_still_served() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        // As the previous version wrote them: JSON value, time entry.
        let old = delivery("/hook", "old", T0);
        let rkey = record_key("/hook", "old");
        store
            .records
            .insert(rkey.as_slice(), serde_json::to_vec(&old).unwrap())
            .unwrap();
        store
            .by_time
            .insert(time_key(T0, &rkey), Vec::new())
            .unwrap();
        // Opened after the upgrade.
        let store = hour_store(&db);
        let new = delivery("/hook", "new", T0 + 1);
        store.put(&new).await.unwrap();
        let now = T0 + 2;
        assert_eq!(store.get("/hook", "old", now).unwrap(), Some(old.clone()));
        assert_eq!(ids(&store.list(0, 10, now).unwrap()), ["new", "old"]);
        assert_eq!(store.find("old", None, now).unwrap(), vec![old.clone()]);
        // The sweep's fence reads an old value's stamp too: an expired
        // time entry naming a record with another stamp leaves it alone.
        let later = delivery("/hook", "old", T0 + 5);
        store
            .records
            .insert(rkey.as_slice(), serde_json::to_vec(&later).unwrap())
            .unwrap();
        let report = store.sweep(T0 + HOUR_MS).unwrap();
        assert_eq!((report.expired, report.remaining), (0, 1));
        assert_eq!(
            store.get("/hook", "old", T0 + HOUR_MS).unwrap(),
            Some(later)
        );
        // Replacing it re-encodes it.
        let newer = delivery("/hook", "old", T0 + 9);
        store.put(&newer).await.unwrap();
        let raw = store.records.get(&rkey).unwrap().unwrap();
        assert_eq!(raw[0], codec::VERSION_1);
        assert_eq!(store.get("/hook", "old", now).unwrap(), Some(newer));
    }

    #[tokio::test]
    async fn put_get_roundtrip_is_byte_identical() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        let mut d = delivery("/emailgistics-webhook", "id with spaces/é\u{1F600}\\\"", T0);
        // Odd spacing, key order and escapes must survive as-is.
        d.body = "{ \"z\":1,  \"a\":\"\\u00e9é\\n\" ,\"n\":1.50 }\n".into();
        d.status = 422;
        d.record = json!({ "message": "rejected", "errors": [{ "plugin": "p", "ms": 1.25 }] });
        store.put(&d).await.unwrap();
        let got = store.get(&d.route, &d.id, T0 + 1).unwrap().unwrap();
        assert_eq!(got.body.as_bytes(), d.body.as_bytes());
        assert_eq!(got, d);
        assert_eq!(store.get(&d.route, "other", T0 + 1).unwrap(), None);
        assert_eq!(store.len(), 1);
        assert!(!store.is_empty());
        assert!(store.size_on_disk().unwrap() > 0);
    }

    #[tokio::test]
    async fn same_id_on_two_routes_does_not_collide() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        let mut a = delivery("/a", "same", T0);
        a.body = "A".into();
        let mut b = delivery("/b", "same", T0 + 5);
        b.body = "B".into();
        store.put(&a).await.unwrap();
        store.put(&b).await.unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("/a", "same", T0 + 10).unwrap().unwrap().body, "A");
        assert_eq!(store.get("/b", "same", T0 + 10).unwrap().unwrap().body, "B");
        // A route that prefixes another must not leak into it.
        store.put(&delivery("/a/b", "same", T0)).await.unwrap();
        assert_eq!(store.get("/a", "same", T0).unwrap().unwrap().body, "A");
    }

    #[tokio::test]
    async fn get_after_expiry_is_none() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        let d = delivery("/hook", "x", T0);
        store.put(&d).await.unwrap();
        assert_eq!(store.get("/hook", "x", T0 + HOUR_MS - 1).unwrap(), Some(d));
        assert_eq!(store.get("/hook", "x", T0 + HOUR_MS).unwrap(), None);
        assert_eq!(store.get("/hook", "x", T0 + 10 * HOUR_MS).unwrap(), None);
        // Reads never write: the record stays until a sweep.
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn replacing_a_key_leaves_one_time_entry() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        store.put(&delivery("/hook", "x", T0)).await.unwrap();
        // Same stamp again (identical retry), then a newer answer.
        store.put(&delivery("/hook", "x", T0)).await.unwrap();
        assert_eq!(store.by_time.len(), 1);
        let newer = delivery("/hook", "x", T0 + 30 * 60 * 1000);
        store.put(&newer).await.unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.by_time.len(), 1);
        let only = store.by_time.iter().keys().next().unwrap().unwrap();
        assert_eq!(split_time_key(&only).unwrap().0, newer.stored_at_ms);
        // The old stamp has expired, the new one has not: nothing to sweep.
        let now = T0 + HOUR_MS + 1;
        assert_eq!(store.get("/hook", "x", now).unwrap(), Some(newer.clone()));
        let report = store.sweep(now).unwrap();
        assert_eq!(
            report,
            SweepReport {
                expired: 0,
                evicted: 0,
                remaining: 1,
                ..Default::default()
            }
        );
        assert_eq!(store.list(0, 10, now).unwrap().len(), 1);
        assert_eq!(store.get("/hook", "x", now).unwrap(), Some(newer));
    }

    #[tokio::test]
    async fn sweep_removes_only_expired() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        for (i, at) in [T0, T0 + 10, T0 + 20, T0 + 30, T0 + 40].iter().enumerate() {
            store
                .put(&delivery("/hook", &format!("d{i}"), *at))
                .await
                .unwrap();
        }
        assert_eq!(store.sweep(T0 + 10).unwrap().expired, 0);
        // At T0 + HOUR + 20: d0, d1 (T0+10) and d2 (T0+20, exactly at the limit) expire.
        let report = store.sweep(T0 + HOUR_MS + 20).unwrap();
        assert_eq!(
            report,
            SweepReport {
                expired: 3,
                evicted: 0,
                remaining: 2,
                ..Default::default()
            }
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.by_time.len(), 2);
        assert!(store
            .get("/hook", "d3", T0 + HOUR_MS + 20)
            .unwrap()
            .is_some());
        assert!(store
            .get("/hook", "d4", T0 + HOUR_MS + 20)
            .unwrap()
            .is_some());
        assert!(store
            .records
            .get(record_key("/hook", "d2"))
            .unwrap()
            .is_none());
        // Idempotent.
        assert_eq!(store.sweep(T0 + HOUR_MS + 20).unwrap().expired, 0);
        let all = store.sweep(u64::MAX).unwrap();
        assert_eq!((all.expired, all.remaining), (2, 0));
        assert!(store.is_empty());
        assert!(store.by_time.is_empty());
    }

    #[tokio::test]
    async fn sweep_handles_more_than_one_batch() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        let n = SWEEP_BATCH * 2 + 7;
        for i in 0..n {
            store
                .put(&delivery("/hook", &format!("{i:05}"), T0 + i as u64))
                .await
                .unwrap();
        }
        store
            .put(&delivery("/hook", "live", T0 + HOUR_MS))
            .await
            .unwrap();
        let report = store.sweep(T0 + HOUR_MS + n as u64).unwrap();
        assert_eq!(report.expired, n);
        assert_eq!(report.remaining, 1);
        // Eviction across batches too, by a store opened on what is there
        // (its count starts from the index).
        drop(store);
        let store2 =
            DeliveryStore::open(&db, settings(HOUR_MS, 10, FlushPolicy::Periodic)).unwrap();
        assert_eq!(store2.len(), 1);
        for i in 0..n {
            store2
                .put(&delivery(
                    "/hook",
                    &format!("{i:05}"),
                    T0 + 2 * HOUR_MS + i as u64,
                ))
                .await
                .unwrap();
        }
        let report = store2.sweep(T0 + 2 * HOUR_MS).unwrap();
        assert_eq!(
            (report.expired, report.evicted, report.remaining),
            (1, n - 10, 10)
        );
    }

    /// Issue 17: `len` is a count kept by the writes, not a walk of the
    /// tree; it must agree with the index after racing puts (new keys and
    /// replacements) and sweeps, and across a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn issue_17_the_kept_count_matches_the_index_under_racing_writes() {
        let (_dir, db) = temp_db();
        let store =
            DeliveryStore::open(&db, settings(HOUR_MS, 150, FlushPolicy::Periodic)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200u64 {
                    // Keys shared between tasks: some puts replace.
                    let id = format!("{}", (i * 7 + t) % 300);
                    let at = T0 + i * 10 + t;
                    store.put(&delivery("/hook", &id, at)).await.unwrap();
                }
            }));
        }
        let sweeper = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                for k in 0..20u64 {
                    store.sweep(T0 + HOUR_MS + k * 50).unwrap();
                }
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        sweeper.await.unwrap();
        assert_eq!(store.len(), store.by_time.len());
        let report = store.sweep(T0 + 1000).unwrap();
        assert_eq!(report.remaining, store.by_time.len());
        assert!(report.remaining <= 150, "{report:?}");
        let reopened =
            DeliveryStore::open(&db, settings(HOUR_MS, 150, FlushPolicy::Periodic)).unwrap();
        assert_eq!(reopened.len(), store.len());
    }

    #[tokio::test]
    async fn eviction_removes_the_oldest_first() {
        let (_dir, db) = temp_db();
        let store = DeliveryStore::open(&db, settings(HOUR_MS, 3, FlushPolicy::Always)).unwrap();
        // Stored out of time order, so key order differs from time order.
        for (id, at) in [
            ("c", T0 + 3),
            ("a", T0 + 5),
            ("e", T0 + 1),
            ("b", T0 + 4),
            ("d", T0 + 2),
        ] {
            store.put(&delivery("/hook", id, at)).await.unwrap();
        }
        let report = store.sweep(T0 + 10).unwrap();
        assert_eq!(
            report,
            SweepReport {
                expired: 0,
                evicted: 2,
                remaining: 3,
                ..Default::default()
            }
        );
        assert_eq!(ids(&store.list(0, 10, T0 + 10).unwrap()), ["a", "b", "c"]);
        assert_eq!(store.by_time.len(), 3);
        // Under the bound: nothing more.
        assert_eq!(store.sweep(T0 + 10).unwrap().evicted, 0);
        // Expired records count as expired, not evicted.
        store
            .put(&delivery("/hook", "new", T0 + HOUR_MS + 4))
            .await
            .unwrap();
        let report = store.sweep(T0 + HOUR_MS + 4).unwrap();
        assert_eq!(
            (report.expired, report.evicted, report.remaining),
            (2, 0, 2)
        );
    }

    #[tokio::test]
    async fn list_since_limit_newest_first_excludes_expired() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        for (id, at) in [
            ("old", T0),
            ("m1", T0 + 100),
            ("m2", T0 + 200),
            ("m3", T0 + 300),
        ] {
            store.put(&delivery("/hook", id, at)).await.unwrap();
        }
        let mut quiet = delivery("/other", "quiet", T0 + 250);
        quiet.record = json!({ "message": 7 });
        quiet.status = 400;
        store.put(&quiet).await.unwrap();

        let now = T0 + 1000;
        let all = store.list(0, 100, now).unwrap();
        assert_eq!(ids(&all), ["m3", "quiet", "m2", "m1", "old"]);
        assert_eq!(all[0].message, format!("m3@{}", T0 + 300));
        assert_eq!(all[0].route, "/hook");
        assert_eq!(all[0].stored_at_ms, T0 + 300);
        assert_eq!((all[1].message.as_str(), all[1].status), ("", 400));
        assert_eq!(ids(&store.list(0, 2, now).unwrap()), ["m3", "quiet"]);
        // `since` is inclusive.
        assert_eq!(
            ids(&store.list(T0 + 200, 100, now).unwrap()),
            ["m3", "quiet", "m2"]
        );
        assert!(store.list(T0 + 301, 100, now).unwrap().is_empty());
        assert!(store.list(0, 0, now).unwrap().is_empty());
        // "old" has expired (not yet swept) at T0 + HOUR; m1 is still live.
        let later = store.list(0, 100, T0 + HOUR_MS).unwrap();
        assert_eq!(ids(&later), ["m3", "quiet", "m2", "m1"]);
        assert!(store.list(0, 100, T0 + HOUR_MS + 300).unwrap().is_empty());
    }

    #[tokio::test]
    async fn find_with_and_without_route() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        // Routes that prefix each other, ids that prefix each other, and an
        // id containing NUL.
        for (route, id, at) in [
            ("/a", "x", T0 + 1),
            ("/a/b", "x", T0 + 3),
            ("/a-b", "x", T0 + 2),
            ("/a", "x1", T0 + 4),
            ("/z", "x\0y", T0 + 5),
            ("/z", "y", T0 + 6),
            ("/old", "x", T0 - HOUR_MS),
        ] {
            store.put(&delivery(route, id, at)).await.unwrap();
        }
        let now = T0 + 10;
        let found = store.find("x", None, now).unwrap();
        let routes: Vec<&str> = found.iter().map(|d| d.route.as_str()).collect();
        assert_eq!(routes, ["/a/b", "/a-b", "/a"]);
        assert!(found.iter().all(|d| d.id == "x"));

        let one = store.find("x", Some("/a-b"), now).unwrap();
        assert_eq!(one, vec![delivery("/a-b", "x", T0 + 2)]);
        assert!(store.find("x", Some("/nope"), now).unwrap().is_empty());
        assert!(store.find("x", Some("/old"), now).unwrap().is_empty());
        assert_eq!(
            store.find("x\0y", None, now).unwrap(),
            vec![delivery("/z", "x\0y", T0 + 5)]
        );
        assert_eq!(store.find("y", None, now).unwrap().len(), 1);
        assert!(store.find("missing", None, now).unwrap().is_empty());
        // Later, everything has expired.
        assert!(store.find("x", None, T0 + 2 * HOUR_MS).unwrap().is_empty());
    }

    #[tokio::test]
    async fn reopen_after_restart_returns_the_same_record() {
        let dir = tempfile::tempdir().unwrap();
        let d = delivery("/hook", "durable", T0);
        {
            let db = sled::open(dir.path()).unwrap();
            let store = hour_store(&db);
            store.put(&d).await.unwrap();
        }
        let db = reopen(dir.path());
        let store = hour_store(&db);
        assert_eq!(store.get("/hook", "durable", T0 + 1).unwrap(), Some(d));
        assert_eq!(store.by_time.len(), 1);
    }

    /// Copy the files while the database is still open and never flushed by
    /// sled on its own: what a crash right after `put` would leave.
    async fn survives_crash(flush: FlushPolicy) -> bool {
        let (dir, db) = unflushed_db();
        let store = DeliveryStore::open(&db, settings(HOUR_MS, 10, flush)).unwrap();
        let d = delivery("/hook", "crash", T0);
        store.put(&d).await.unwrap();
        let snapshot = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), snapshot.path());
        let recovered = sled::open(snapshot.path()).unwrap();
        let store = hour_store(&recovered);
        store.get("/hook", "crash", T0 + 1).unwrap() == Some(d)
    }

    #[tokio::test]
    async fn always_flush_survives_a_crash() {
        assert!(survives_crash(FlushPolicy::Always).await);
    }

    #[tokio::test]
    async fn periodic_without_background_flush_does_not_reach_disk() {
        // Control for the test above: without the flush in `put`, the same
        // snapshot misses the record, so that test does detect the flush.
        assert!(!survives_crash(FlushPolicy::Periodic).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn periodic_policy_works_functionally() {
        let dir = tempfile::tempdir().unwrap();
        let d = delivery("/hook", "p", T0);
        {
            let db = sled::open(dir.path()).unwrap();
            let store =
                DeliveryStore::open(&db, settings(HOUR_MS, 10, FlushPolicy::Periodic)).unwrap();
            store.put(&d).await.unwrap();
            store.put(&delivery("/hook", "q", T0 + 1)).await.unwrap();
            assert_eq!(store.get("/hook", "p", T0 + 2).unwrap(), Some(d.clone()));
            assert_eq!(ids(&store.list(0, 10, T0 + 2).unwrap()), ["q", "p"]);
            assert_eq!(store.find("p", None, T0 + 2).unwrap(), vec![d.clone()]);
            assert_eq!(store.sweep(T0 + 2).unwrap().remaining, 2);
        }
        // A clean shutdown (dropping the Db) flushes. sled's flusher thread
        // lets go of the file lock a moment after the drop: retry briefly.
        let db = reopen(dir.path());
        let store = DeliveryStore::open(&db, settings(HOUR_MS, 10, FlushPolicy::Periodic)).unwrap();
        assert_eq!(store.get("/hook", "p", T0 + 2).unwrap(), Some(d));
    }

    #[tokio::test]
    async fn stale_time_entries_are_skipped_and_swept() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        store.put(&delivery("/hook", "x", T0 + 10)).await.unwrap();
        // Entries the index should not have: one for an older stamp of a live
        // record, one for a record that no longer exists, one malformed (sorting first).
        store
            .by_time
            .insert(time_key(T0, &record_key("/hook", "x")), Vec::new())
            .unwrap();
        store
            .by_time
            .insert(time_key(T0 + 5, &record_key("/hook", "gone")), Vec::new())
            .unwrap();
        store
            .by_time
            .insert([0u8; 3].as_slice(), Vec::new())
            .unwrap();
        // Written behind the store's back: a store opened now counts them.
        let store = hour_store(&db);
        assert_eq!(store.len(), 4);
        assert_eq!(ids(&store.list(0, 10, T0 + 20).unwrap()), ["x"]);
        let report = store.sweep(T0 + HOUR_MS + 5).unwrap();
        assert_eq!((report.expired, report.remaining), (0, 1));
        assert_eq!(store.by_time.len(), 1);
        assert!(store.get("/hook", "x", T0 + HOUR_MS + 5).unwrap().is_some());
    }

    #[tokio::test]
    async fn corrupt_record_is_reported_and_healed_by_put() {
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        store
            .records
            .insert(record_key("/hook", "bad"), b"{not json".as_slice())
            .unwrap();
        let err = store.get("/hook", "bad", T0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { ref key, .. } if key == "/hook bad"));
        assert!(err
            .to_string()
            .starts_with("delivery store: corrupt record /hook bad: "));
        let d = delivery("/hook", "bad", T0);
        store.put(&d).await.unwrap();
        assert_eq!(store.get("/hook", "bad", T0).unwrap(), Some(d));
        assert_eq!(store.by_time.len(), 1);
    }

    #[test]
    fn put_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let (_dir, db) = temp_db();
        let store = hour_store(&db);
        let d = delivery("/hook", "s", T0);
        assert_send(store.put(&d));
    }
}
