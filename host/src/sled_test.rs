//! Test helpers for the sled-backed stores (delivery store, event queue).

use std::path::Path;
use std::time::{Duration, Instant};

/// A fresh database in a temporary directory.
pub fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
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
