//! The answers' group commit on real sled files: concurrent puts with
//! `flush = "always"` are all on disk when they return, and share flushes;
//! a batch keeps the count of indexed records exact.

use std::sync::Arc;

use super::tests::{delivery, settings, HOUR_MS, T0};
use super::{record_key, time_key, DeliveryStore, Put, Writer};
use crate::storage::codec;
use crate::storage::sled::test_util::{crash_copy, temp_db, unflushed_db};
use crate::storage::FlushPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_always_puts_share_flushes_and_are_on_disk_when_they_return() {
    const N: u64 = 64;
    let (dir, db) = unflushed_db();
    let store = DeliveryStore::open(&db, settings(HOUR_MS, 1000, FlushPolicy::Always)).unwrap();
    let puts: Vec<_> = (0..N)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put(&delivery("/hook", &format!("c{i}"), T0 + i))
                    .await
            })
        })
        .collect();
    for put in puts {
        put.await.unwrap().unwrap();
    }
    // What a crash right after the last put returned would leave (sled's
    // own flusher is off: only the writer's flushes reach the files).
    let (_snapshot, recovered) = crash_copy(dir.path());
    let flushes = store.flushes();
    let recovered =
        DeliveryStore::open(&recovered, settings(HOUR_MS, 1000, FlushPolicy::Periodic)).unwrap();
    for i in 0..N {
        assert_eq!(
            recovered.get("/hook", &format!("c{i}"), T0 + N).unwrap(),
            Some(delivery("/hook", &format!("c{i}"), T0 + i)),
            "c{i} was answered but is not on disk"
        );
    }
    assert_eq!(recovered.len(), N as usize);
    assert!(flushes >= 1, "flush = always flushed nothing");
    assert!(
        flushes < N,
        "{N} concurrent puts flushed {flushes} times: no sharing"
    );
}

#[tokio::test]
async fn periodic_puts_never_flush() {
    let (_dir, db) = temp_db();
    let store = DeliveryStore::open(&db, settings(HOUR_MS, 1000, FlushPolicy::Periodic)).unwrap();
    store.put(&delivery("/hook", "p", T0)).await.unwrap();
    assert_eq!(store.flushes(), 0);
    assert!(store.get("/hook", "p", T0).unwrap().is_some());
}

/// A batch may hold the same key twice (a retry and its original, racing):
/// the second replaces the first within the transaction, and one time entry
/// is left, counted once.
#[tokio::test]
async fn a_batch_that_puts_one_key_twice_indexes_it_once() {
    let (_dir, db) = temp_db();
    let store = DeliveryStore::open(&db, settings(HOUR_MS, 1000, FlushPolicy::Periodic)).unwrap();
    store.put(&delivery("/hook", "x", T0)).await.unwrap();
    let put = |id: &str, at: u64| {
        let rkey = record_key("/hook", id);
        Put {
            tkey: time_key(at, &rkey),
            rkey,
            value: codec::encode(&delivery("/hook", id, at)),
        }
    };
    // The store's own writer, called with a batch built by hand.
    let writer = Writer {
        db: store.db.clone(),
        records: store.records.clone(),
        by_time: store.by_time.clone(),
        indexed: store.indexed.clone(),
        flushes: Arc::default(),
        flush: FlushPolicy::Periodic,
    };
    writer
        .write(&[put("x", T0 + 1), put("y", T0 + 2), put("x", T0 + 3)])
        .unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.by_time.len(), 2);
    assert_eq!(
        store.get("/hook", "x", T0 + 4).unwrap(),
        Some(delivery("/hook", "x", T0 + 3))
    );
    let reopened =
        DeliveryStore::open(&db, settings(HOUR_MS, 1000, FlushPolicy::Periodic)).unwrap();
    assert_eq!(reopened.len(), 2);
}
