//! The sled backend of the storage ports: one embedded database,
//! `enrichd.sled` under the data directory, for one host.
//!
//! - [`answers`]: answered deliveries (two trees, a time index, sweeps);
//!   [`claims`] puts the answers port on it, with leases in memory.
//! - [`events`]: the EngageLab queue and its duplicate filter; [`ports`]
//!   puts the event-queue port on it, with leases in memory.
//! - [`kv`]: the plugins' namespaces with their quotas.
//! - [`crm`]: last-known CRM values.
//! - [`crm_records`]: the embedded CRM's records (a CRM backend seeded from
//!   a file, used on every storage kind).
//!
//! sled allows one process per database, so a lease held in this process's
//! memory is exactly as long-lived as the only host that could hold it; a
//! restart forgets every lease, and a callback leased when the host died is
//! simply processed again (at least once).
//!
//! sled reads cold pages and waits for its write buffers on the calling
//! thread, so every port call runs its sled work on tokio's blocking pool
//! (`blocking`), never on a runtime worker; a caller already off the
//! workers (a plugin call) has it done in place ([`super::may_block`]).

pub mod answers;
pub mod claims;
mod commit;
pub mod crm;
pub mod crm_records;
pub mod events;
pub mod kv;
pub mod ports;
#[cfg(test)]
pub(crate) mod test_util;

use std::sync::Arc;

use super::{Limits, OpenError, SledSettings, Storage, StorageError};
use crate::clock::Clock;

pub(crate) use answers::flush;

/// The database's directory name under the data directory.
pub const DB_DIR: &str = "enrichd.sled";

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Unavailable(format!("sled: {e}"))
    }
}

impl From<sled::Error> for super::KvError {
    fn from(e: sled::Error) -> Self {
        super::KvError::Storage(e.into())
    }
}

/// Run sled work on tokio's blocking pool (see the module docs), or right
/// here on a thread that may block ([`super::may_block`]).
pub(crate) async fn blocking<T: Send + 'static, E: From<StorageError> + Send + 'static>(
    op: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    if super::may_block_here() {
        return op();
    }
    tokio::task::spawn_blocking(op).await.unwrap_or_else(|e| {
        Err(E::from(StorageError::Unavailable(format!(
            "sled operation interrupted: {e}"
        ))))
    })
}

/// Open the database in `settings.data_dir` (creating the directory).
pub fn open_db(settings: &SledSettings) -> Result<sled::Db, OpenError> {
    let dir = &settings.data_dir;
    let failed = |detail: String| OpenError {
        backend: "sled",
        target: dir.display().to_string(),
        detail,
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format!("cannot create the data directory: {e}")))?;
    sled::Config::new()
        .path(settings.db_path())
        .flush_every_ms(Some(settings.flush_every_ms))
        // sled caches up to 1 GiB by default, kv values included.
        .cache_capacity(settings.cache_bytes)
        .open()
        .map_err(|e| failed(e.to_string()))
}

/// Open the sled backend: one database, every port on it.
pub async fn open(
    settings: &SledSettings,
    limits: &Limits,
    clock: Clock,
) -> Result<Storage, OpenError> {
    let settings = settings.clone();
    let limits = limits.clone();
    let opened = tokio::task::spawn_blocking(move || open_blocking(&settings, &limits, clock))
        .await
        .map_err(|e| OpenError {
            backend: "sled",
            target: String::new(),
            detail: e.to_string(),
        })?;
    opened.map(|(storage, _db)| storage)
}

/// [`open`], also handing out the database (for the embedded CRM, which
/// lives in the same file when the storage is sled).
pub fn open_blocking(
    settings: &SledSettings,
    limits: &Limits,
    clock: Clock,
) -> Result<(Storage, sled::Db), OpenError> {
    let db = open_db(settings)?;
    let failed = |e: String| OpenError {
        backend: "sled",
        target: settings.data_dir.display().to_string(),
        detail: e,
    };
    let store = answers::DeliveryStore::open(
        &db,
        super::answers::StoreSettings {
            retention: limits.retention,
            max_records: limits.max_records,
            flush: settings.flush,
        },
    )
    .map_err(|e| failed(e.to_string()))?;
    let queue = events::Queue::open(&db, limits.dedupe_window, limits.max_queued)
        .map_err(|e| failed(e.to_string()))?;
    let answers = Arc::new(claims::SledAnswers::new(store.clone(), clock));
    let events = Arc::new(ports::SledEvents::new(queue.clone()));
    let storage = Storage {
        answers,
        events,
        kv: Arc::new(kv::KvStore::new(&db)),
        crm: Arc::new(crm::SledCrmLastKnown::new(&db, clock)),
        maintenance: Arc::new(ports::SledMaintenance::new(db.clone(), store, queue, clock)),
        backend: "sled",
    };
    Ok((storage, db))
}

#[cfg(test)]
mod tests;
