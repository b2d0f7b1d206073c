//! The protocol over a real sled storage.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::storage::sled::test_util::temp_storage;
use crate::storage::Storage;

const LEASE: Duration = Duration::from_secs(10);

fn ran(status: u16, body: &str) -> Ran {
    Ran {
        answer: Answer {
            status,
            body: Bytes::from(body.to_owned()),
            answered_at_ms: crate::storage::conformance::now_ms(),
        },
        record: serde_json::json!({ "message": body }),
    }
}

async fn once(
    s: &Storage,
    inflight: &Arc<Inflight>,
    key: &DeliveryKey,
    runs: &AtomicUsize,
    status: u16,
) -> Result<(Arc<Answer>, bool), Unanswered> {
    let end = Instant::now() + Duration::from_secs(5);
    answer_once(&s.answers, inflight, key, LEASE, end, || async move {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        ran(status, "{\"status\":\"ok\"}")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_copies_run_once_and_get_one_answer() {
    let (_dir, s) = temp_storage();
    let inflight = Arc::new(Inflight::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let key = DeliveryKey::new("/hook", "many");
    let copies: Vec<_> = (0..16)
        .map(|_| {
            let (s, inflight, runs, key) = (s.clone(), inflight.clone(), runs.clone(), key.clone());
            tokio::spawn(async move { once(&s, &inflight, &key, &runs, 200).await.unwrap() })
        })
        .collect();
    let mut replayed = 0;
    for copy in copies {
        let (answer, was_replayed) = copy.await.unwrap();
        assert_eq!(answer.body, "{\"status\":\"ok\"}");
        replayed += usize::from(was_replayed);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(replayed, 15);
    // A later copy replays the stored answer.
    let (_, was_replayed) = once(&s, &inflight, &key, &runs, 200).await.unwrap();
    assert!(was_replayed);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_not_stored_and_the_next_copy_runs() {
    let (_dir, s) = temp_storage();
    let inflight = Arc::new(Inflight::default());
    let runs = AtomicUsize::new(0);
    let key = DeliveryKey::new("/hook", "retry");
    let (answer, replayed) = once(&s, &inflight, &key, &runs, 503).await.unwrap();
    assert_eq!((answer.status, replayed), (503, false));
    assert_eq!(s.answers.get(&key).await.unwrap(), None);
    let (answer, replayed) = once(&s, &inflight, &key, &runs, 200).await.unwrap();
    assert_eq!((answer.status, replayed), (200, false));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_waits_for_another_holder_and_replays_its_answer() {
    let (_dir, s) = temp_storage();
    let inflight = Arc::new(Inflight::default());
    let runs = AtomicUsize::new(0);
    let key = DeliveryKey::new("/hook", "held");
    // "Another host" holds the key, and answers a little later.
    let Claimed::Leader(lease) = s.answers.claim(&key, LEASE).await.unwrap() else {
        panic!("leads");
    };
    let other = s.clone();
    let stored =
        crate::storage::conformance::answer(&key, crate::storage::conformance::now_ms(), "other");
    let answered = stored.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.answers.complete(&lease, &answered).await.unwrap();
    });
    let (answer, replayed) = once(&s, &inflight, &key, &runs, 200).await.unwrap();
    assert!(replayed);
    assert_eq!(answer.body, stored.body);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_past_the_budget_is_still_running() {
    let (_dir, s) = temp_storage();
    let inflight = Arc::new(Inflight::default());
    let key = DeliveryKey::new("/hook", "slow");
    let Claimed::Leader(_lease) = s.answers.claim(&key, LEASE).await.unwrap() else {
        panic!("leads");
    };
    let end = Instant::now() + Duration::from_millis(300);
    let got = answer_once(&s.answers, &inflight, &key, LEASE, end, || async {
        panic!("must not run")
    })
    .await;
    assert!(matches!(got, Err(Unanswered::StillRunning)), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_goes_away_lets_a_waiting_copy_run_at_once() {
    let (_dir, s) = temp_storage();
    let inflight = Arc::new(Inflight::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let key = DeliveryKey::new("/hook", "dropped");
    let first = {
        let (s, inflight, runs, key) = (s.clone(), inflight.clone(), runs.clone(), key.clone());
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(60);
            let _ = answer_once(&s.answers, &inflight, &key, LEASE, end, || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Ran>().await
            })
            .await;
        })
    };
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first copy's connection drops: its task is cancelled mid-run.
    first.abort();
    let _ = first.await;
    let started = std::time::Instant::now();
    let (answer, replayed) = once(&s, &inflight, &key, &runs, 200).await.unwrap();
    assert_eq!((answer.status, replayed), (200, false));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}: the lease (10 s) was not released",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ends_unanswered_is_taken_over() {
    let (_dir, s) = temp_storage();
    let inflight = Arc::new(Inflight::default());
    let runs = AtomicUsize::new(0);
    let key = DeliveryKey::new("/hook", "dead-leader");
    // A leader that died: its short lease ends and this copy runs.
    let Claimed::Leader(_) = s
        .answers
        .claim(&key, Duration::from_millis(200))
        .await
        .unwrap()
    else {
        panic!("leads");
    };
    let (answer, replayed) = once(&s, &inflight, &key, &runs, 200).await.unwrap();
    assert_eq!((answer.status, replayed), (200, false));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
