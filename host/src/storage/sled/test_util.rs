//! Test helpers for the sled backend: temporary databases and storages,
//! crash copies.

use std::path::Path;
use std::time::{Duration, Instant};

/// A fresh database in a temporary directory.
pub fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    (dir, db)
}

/// A database that sled never flushes on its own: what reaches its files
/// is only what the code under test flushed (a crash copy shows it).
pub fn unflushed_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()
        .unwrap();
    (dir, db)
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Open a snapshot of `dir` taken while its database is still open (with
/// sled's background flusher off): what a crash would leave.
pub fn crash_copy(dir: &Path) -> (tempfile::TempDir, sled::Db) {
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(dir, snapshot.path());
    let db = sled::open(snapshot.path()).unwrap();
    (snapshot, db)
}

/// Open `path` once the previous handle in this process has let go:
/// sled's flusher thread releases the file lock a moment after the drop.
pub fn reopen(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot reopen {}: {e}", path.display()),
        }
    }
}

/// A fresh sled [`Storage`](crate::storage::Storage) in a temporary
/// directory, with the conformance suite's limits.
pub fn temp_storage() -> (tempfile::TempDir, crate::storage::Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path(), crate::storage::conformance::limits());
    (dir, storage)
}

/// Settings for a sled storage in `dir`: flush always, a small cache.
pub fn settings(dir: &Path) -> crate::storage::SledSettings {
    crate::storage::SledSettings {
        data_dir: dir.to_path_buf(),
        flush: crate::storage::FlushPolicy::Always,
        flush_every_ms: 500,
        cache_bytes: 16 << 20,
    }
}

/// Open a sled storage in `dir` with `limits`.
pub fn open_storage(dir: &Path, limits: crate::storage::Limits) -> crate::storage::Storage {
    super::open_blocking(&settings(dir), &limits, crate::clock::Clock::new())
        .unwrap()
        .0
}
