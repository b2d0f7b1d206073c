//! The sled backend against the port-level suite, and what is sled's own:
//! leases live in the process, so a restart forgets them.

use std::time::Duration;

use super::test_util::{open_storage, settings};
use crate::storage::conformance::{self as c, LONG};
use crate::storage::{Claimed, DeliveryKey, Limits, Next, Storage};

async fn make(limits: Limits) -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path(), limits);
    (dir, storage)
}

crate::conformance_tests!(make);

/// Reopen `dir` once the previous storage let go of sled's lock.
fn reopen(dir: &std::path::Path) -> Storage {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match super::open_blocking(&settings(dir), &c::limits(), crate::clock::Clock::new()) {
            Ok((storage, _)) => return storage,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("cannot reopen: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_forgets_leases_and_keeps_answers_and_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let key = DeliveryKey::new("/hook", "r");
    let answered = DeliveryKey::new("/hook", "done");
    let t = c::now_ms();
    {
        let s = open_storage(dir.path(), c::limits());
        let Claimed::Leader(lease) = s.answers.claim(&answered, LONG).await.unwrap() else {
            panic!("leads");
        };
        let a = c::answer(&answered, t, "before");
        s.answers.complete(&lease, &a).await.unwrap();
        assert!(matches!(
            s.answers.claim(&key, LONG).await.unwrap(),
            Claimed::Leader(_)
        ));
        s.events.enqueue("/ev", "x", t).await.unwrap();
        assert!(matches!(
            s.events.lease_next(t, LONG).await.unwrap(),
            Next::Leased(_)
        ));
    }
    let s = reopen(dir.path());
    // The leader died with the process: its key runs again at once.
    assert!(matches!(
        s.answers.claim(&key, LONG).await.unwrap(),
        Claimed::Leader(_)
    ));
    assert!(matches!(
        s.answers.claim(&answered, LONG).await.unwrap(),
        Claimed::Answered(_)
    ));
    // The callback being processed is processed again (at least once).
    let Next::Leased(e) = s.events.lease_next(t, LONG).await.unwrap() else {
        panic!("the unacknowledged callback is due again");
    };
    assert_eq!(e.body, "x");
    assert_eq!(s.events.len().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_one_leader() {
    let (_dir, s) = make(c::limits()).await;
    let key = DeliveryKey::new("/hook", "race");
    let claims = (0..16).map(|_| {
        let (s, key) = (s.clone(), key.clone());
        tokio::spawn(async move { s.answers.claim(&key, LONG).await.unwrap() })
    });
    let mut leaders = 0;
    for claim in claims {
        if matches!(claim.await.unwrap(), Claimed::Leader(_)) {
            leaders += 1;
        }
    }
    assert_eq!(leaders, 1);
}
