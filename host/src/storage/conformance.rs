//! One port-level test suite for every backend.
//!
//! Each case is a `pub async fn` taking the backend's [`Storage`] (the
//! cases that need different limits take a maker, the cross-host cases two
//! storages on one backend). A backend runs them all with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! crate::conformance_tests!(make);            // one host
//! crate::conformance_tests!(make, two_hosts); // plus the cross-host cases
//! ```
//!
//! where `make(limits)` is an `async fn(Limits) -> (G, Storage)` (`G` is
//! kept alive for the test: a temporary directory, a key prefix to clean
//! up…), and each call gives a store no other test sees. Leases and
//! retention are exercised with real (short) time, so the same cases hold
//! for sled's in-process leases and Redis's `PX` expiries.

use std::time::Duration;

use super::{
    Claimed, Completed, DeliveryKey, Enqueued, KvError, Limits, Next, QueueError, Quota, Storage,
    StoredDelivery, Usage,
};

/// A lease long enough never to end during a test.
pub const LONG: Duration = Duration::from_secs(60);
/// A lease short enough to wait out.
pub const SHORT: Duration = Duration::from_millis(150);
/// Longer than [`SHORT`], with margin for a slow machine.
pub const PAST_SHORT: Duration = Duration::from_millis(400);

/// The limits most cases run with.
pub fn limits() -> Limits {
    Limits {
        retention: Duration::from_secs(3600),
        max_records: 1000,
        dedupe_window: Duration::from_secs(3600),
        max_queued: 1000,
    }
}

/// Now, in unix ms (stored answers are stamped by the caller).
pub fn now_ms() -> u64 {
    crate::clock::Clock::new().now_ms()
}

/// An answer for `key` stamped `at`, with a body naming `who`.
pub fn answer(key: &DeliveryKey, at: u64, who: &str) -> StoredDelivery {
    StoredDelivery {
        route: key.route.clone(),
        id: key.id.clone(),
        stored_at_ms: at,
        status: 200,
        body: format!("{{ \"by\": \"{who}\",  \"é\":\"\\u00e9\" }}\n"),
        record: serde_json::json!({ "message": format!("answered by {who}") }),
    }
}

fn leader(claimed: Claimed) -> super::LeaseToken {
    match claimed {
        Claimed::Leader(lease) => lease,
        other => panic!("expected to lead, got {other:?}"),
    }
}

/// Claim → complete → get, and a later claim replays the same bytes.
pub async fn claim_complete_replay(s: &Storage) {
    let key = DeliveryKey::new("/hook", "d1");
    assert_eq!(s.answers.get(&key).await.unwrap(), None);
    let lease = leader(s.answers.claim(&key, LONG).await.unwrap());
    let a = answer(&key, now_ms(), "leader");
    assert_eq!(
        s.answers.complete(&lease, &a).await.unwrap(),
        Completed::Stored
    );
    assert_eq!(s.answers.get(&key).await.unwrap(), Some(a.clone()));
    match s.answers.claim(&key, LONG).await.unwrap() {
        Claimed::Answered(got) => assert_eq!(got.body.as_bytes(), a.body.as_bytes()),
        other => panic!("expected the answer, got {other:?}"),
    }
    // The same id on another route is another delivery.
    let other = DeliveryKey::new("/other", "d1");
    leader(s.answers.claim(&other, LONG).await.unwrap());
    assert_eq!(s.answers.len().await.unwrap(), 1);
}

/// A second claim while the first is leased is `Held`.
pub async fn held_while_leased(s: &Storage) {
    let key = DeliveryKey::new("/hook", "held");
    let _lease = leader(s.answers.claim(&key, LONG).await.unwrap());
    assert_eq!(s.answers.claim(&key, LONG).await.unwrap(), Claimed::Held);
    assert_eq!(s.answers.claim(&key, LONG).await.unwrap(), Claimed::Held);
}

/// Releasing lets the next claim lead; nothing was stored.
pub async fn release_lets_the_next_claim_lead(s: &Storage) {
    let key = DeliveryKey::new("/hook", "released");
    let first = leader(s.answers.claim(&key, LONG).await.unwrap());
    s.answers.release(&first).await.unwrap();
    let second = leader(s.answers.claim(&key, LONG).await.unwrap());
    assert_ne!(first.token, second.token);
    // Releasing the old lease again does not free the new one.
    s.answers.release(&first).await.unwrap();
    assert_eq!(s.answers.claim(&key, LONG).await.unwrap(), Claimed::Held);
    assert_eq!(s.answers.get(&key).await.unwrap(), None);
}

/// An expired lease lets another claim lead.
pub async fn an_expired_lease_lets_another_claim_lead(s: &Storage) {
    let key = DeliveryKey::new("/hook", "expired");
    let _first = leader(s.answers.claim(&key, SHORT).await.unwrap());
    assert_eq!(s.answers.claim(&key, LONG).await.unwrap(), Claimed::Held);
    tokio::time::sleep(PAST_SHORT).await;
    leader(s.answers.claim(&key, LONG).await.unwrap());
}

/// A leader whose lease expired and was taken cannot complete
/// (`LeaseLost`), and the new leader's answer stands.
pub async fn a_lost_lease_cannot_complete(s: &Storage) {
    let key = DeliveryKey::new("/hook", "lost");
    let old = leader(s.answers.claim(&key, SHORT).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    let new = leader(s.answers.claim(&key, LONG).await.unwrap());
    let late = answer(&key, now_ms(), "old");
    assert_eq!(
        s.answers.complete(&old, &late).await.unwrap(),
        Completed::LeaseLost
    );
    assert_eq!(s.answers.get(&key).await.unwrap(), None);
    let a = answer(&key, now_ms(), "new");
    assert_eq!(
        s.answers.complete(&new, &a).await.unwrap(),
        Completed::Stored
    );
    assert_eq!(s.answers.get(&key).await.unwrap(), Some(a));
}

/// A leader whose key was answered meanwhile gets that answer back
/// (`Superseded`) and overwrites nothing.
pub async fn a_superseded_leader_overwrites_nothing(s: &Storage) {
    let key = DeliveryKey::new("/hook", "superseded");
    let old = leader(s.answers.claim(&key, SHORT).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    let new = leader(s.answers.claim(&key, LONG).await.unwrap());
    let first = answer(&key, now_ms(), "new");
    assert_eq!(
        s.answers.complete(&new, &first).await.unwrap(),
        Completed::Stored
    );
    let late = answer(&key, now_ms() + 1, "old");
    assert_eq!(
        s.answers.complete(&old, &late).await.unwrap(),
        Completed::Superseded(first.clone())
    );
    assert_eq!(s.answers.get(&key).await.unwrap(), Some(first));
}

async fn store(s: &Storage, route: &str, id: &str, at: u64) -> StoredDelivery {
    let key = DeliveryKey::new(route, id);
    let lease = leader(s.answers.claim(&key, LONG).await.unwrap());
    let a = answer(&key, at, id);
    assert_eq!(
        s.answers.complete(&lease, &a).await.unwrap(),
        Completed::Stored
    );
    a
}

/// `list` is newest first from `since`, bounded by `limit`; `find` finds
/// an id on every route or on one.
pub async fn list_and_find(s: &Storage) {
    let t = now_ms();
    let a = store(s, "/a", "x", t - 30).await;
    let b = store(s, "/b", "x", t - 20).await;
    let c = store(s, "/a", "y", t - 10).await;
    let ids: Vec<(String, String)> = s
        .answers
        .list(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.route, d.id))
        .collect();
    assert_eq!(
        ids,
        [("/a", "y"), ("/b", "x"), ("/a", "x")].map(|(r, i)| (r.to_owned(), i.to_owned()))
    );
    let newest = s.answers.list(0, 1).await.unwrap();
    assert_eq!(newest, vec![c.summary()]);
    assert_eq!(newest[0].message, "answered by y");
    assert_eq!(s.answers.list(t - 20, 10).await.unwrap().len(), 2);
    assert!(s.answers.list(t + 1000, 10).await.unwrap().is_empty());
    assert_eq!(s.answers.find("x", None).await.unwrap(), vec![b, a.clone()]);
    assert_eq!(s.answers.find("x", Some("/a")).await.unwrap(), vec![a]);
    assert!(s.answers.find("z", None).await.unwrap().is_empty());
}

/// Answers past their retention are gone from every read. `make` is
/// given a one-second retention.
pub async fn answers_expire<G>(make: impl AsyncFnOnce(Limits) -> (G, Storage)) {
    let (_guard, s) = make(Limits {
        retention: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let a = store(&s, "/hook", "brief", now_ms()).await;
    assert_eq!(s.answers.get(&a.key()).await.unwrap(), Some(a.clone()));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(s.answers.get(&a.key()).await.unwrap(), None);
    assert!(s.answers.list(0, 10).await.unwrap().is_empty());
    assert!(s.answers.find("brief", None).await.unwrap().is_empty());
    // Expired: the key may run again.
    leader(s.answers.claim(&a.key(), LONG).await.unwrap());
}

/// Enqueue: new, duplicate (same route and body), another route is not a
/// duplicate, and a full queue refuses. `make` is given `max_queued = 2`.
pub async fn enqueue_dedupes_and_refuses_when_full<G>(
    make: impl AsyncFnOnce(Limits) -> (G, Storage),
) {
    let (_guard, s) = make(Limits {
        max_queued: 2,
        ..limits()
    })
    .await;
    let q = &s.events;
    let t = now_ms();
    assert_eq!(q.enqueue("/ev", "a", t).await.unwrap(), Enqueued::New);
    assert_eq!(q.enqueue("/ev", "a", t).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(q.enqueue("/other", "a", t).await.unwrap(), Enqueued::New);
    assert_eq!(q.len().await.unwrap(), 2);
    assert_eq!(q.max_queued(), 2);
    assert!(matches!(
        q.enqueue("/ev", "b", t).await,
        Err(QueueError::Full(2))
    ));
    assert!(q.seen_len().await.unwrap() >= 2);
    // Processing one makes room; its fingerprint still suppresses copies.
    let Next::Leased(first) = q.lease_next(t, LONG).await.unwrap() else {
        panic!("one is due");
    };
    q.ack(&first).await.unwrap();
    assert_eq!(q.enqueue("/ev", "a", t).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(q.enqueue("/ev", "b", t).await.unwrap(), Enqueued::New);
}

/// `lease_next` hands out the oldest due callback, each to one holder;
/// `ack` removes it; `retry_at` puts it back with a not-before time.
pub async fn lease_ack_and_retry(s: &Storage) {
    let q = &s.events;
    let t = now_ms();
    assert_eq!(q.lease_next(t, LONG).await.unwrap(), Next::Idle(None));
    for body in ["a", "b", "c"] {
        q.enqueue("/ev", body, t).await.unwrap();
    }
    let lease = |now| async move {
        match q.lease_next(now, LONG).await.unwrap() {
            Next::Leased(e) => Some(e),
            Next::Idle(_) => None,
        }
    };
    let a = lease(t).await.unwrap();
    assert_eq!((a.body.as_str(), a.route.as_str()), ("a", "/ev"));
    assert_eq!((a.attempts, a.received_at_ms), (0, t));
    let b = lease(t).await.unwrap();
    assert_eq!(b.body, "b", "a leased callback is not handed out again");
    q.ack(&a).await.unwrap();
    q.ack(&a).await.unwrap(); // twice is harmless
    q.retry_at(&b, 1, t + 60_000).await.unwrap();
    let c = lease(t).await.unwrap();
    assert_eq!(c.body, "c");
    assert!(lease(t).await.is_none(), "b waits for its time");
    assert_eq!(q.len().await.unwrap(), 2);
    let again = lease(t + 60_000).await.expect("b is due");
    assert_eq!((again.body.as_str(), again.attempts), ("b", 1));
    assert_eq!(again.received_at_ms, t);
    q.ack(&again).await.unwrap();
    q.ack(&c).await.unwrap();
    assert_eq!(q.len().await.unwrap(), 0);
    // Retrying one already acknowledged does not bring it back.
    q.retry_at(&c, 1, t).await.unwrap();
    assert!(lease(t + 60_000).await.is_none());
}

/// The head of the line: the first callback queued, leased or not, until
/// it is acknowledged or put back for a retry; a retry waiting for its time
/// is the head once nothing else is queued.
pub async fn queue_head_is_the_oldest_in_line(s: &Storage) {
    let q = &s.events;
    let t = now_ms();
    assert_eq!(q.head_received_ms().await.unwrap(), None);
    q.enqueue("/ev", "first", t).await.unwrap();
    q.enqueue("/ev", "second", t + 10).await.unwrap();
    assert_eq!(q.head_received_ms().await.unwrap(), Some(t));
    let Next::Leased(first) = q.lease_next(t + 20, LONG).await.unwrap() else {
        panic!("first is due");
    };
    assert_eq!(
        q.head_received_ms().await.unwrap(),
        Some(t),
        "leased still waits"
    );
    q.retry_at(&first, 1, t + 60_000).await.unwrap();
    assert_eq!(q.head_received_ms().await.unwrap(), Some(t + 10));
    let Next::Leased(second) = q.lease_next(t + 20, LONG).await.unwrap() else {
        panic!("second is due");
    };
    q.ack(&second).await.unwrap();
    assert_eq!(
        q.head_received_ms().await.unwrap(),
        Some(t),
        "the retry is next"
    );
}

/// A callback whose lease ended unacknowledged is handed out again.
pub async fn an_expired_event_lease_is_handed_out_again(s: &Storage) {
    let q = &s.events;
    let t = now_ms();
    q.enqueue("/ev", "slow", t).await.unwrap();
    let Next::Leased(first) = q.lease_next(t, SHORT).await.unwrap() else {
        panic!("due");
    };
    assert!(matches!(
        q.lease_next(t, LONG).await.unwrap(),
        Next::Idle(_)
    ));
    tokio::time::sleep(PAST_SHORT).await;
    let Next::Leased(again) = q.lease_next(now_ms(), LONG).await.unwrap() else {
        panic!("the lease ended: handed out again");
    };
    assert_eq!(again.body, first.body);
    q.ack(&again).await.unwrap();
    assert_eq!(q.len().await.unwrap(), 0);
}

/// kv: namespaces apart, the quota obeyed and refused by the one rule,
/// usage kept through overwrites and deletes.
pub async fn kv_quota_and_usage(s: &Storage) {
    let kv = &s.kv;
    let quota = Quota {
        max_keys: 2,
        max_bytes: 30,
    };
    kv.set_within("p", "a", "0123456789", quota).await.unwrap();
    assert_eq!(
        kv.get("p", "a").await.unwrap().as_deref(),
        Some("0123456789")
    );
    assert_eq!(kv.get("q", "a").await.unwrap(), None);
    kv.set_within("p", "b", "x", quota).await.unwrap();
    assert_eq!(kv.usage("p").await.unwrap(), Usage { keys: 2, bytes: 13 });
    // Overwrite: same key count, bytes by the difference.
    kv.set_within("p", "a", "01234", quota).await.unwrap();
    assert_eq!(kv.usage("p").await.unwrap(), Usage { keys: 2, bytes: 8 });
    kv.set_within("p", "a", "0123456789", quota).await.unwrap();
    let full = kv.set_within("p", "c", "x", quota).await.unwrap_err();
    assert!(full.to_string().contains("kv_max_keys = 2"), "{full}");
    assert!(
        matches!(
            full,
            KvError::OverLimit {
                limit: "kv_max_keys",
                ..
            }
        ),
        "{full}"
    );
    let big = kv
        .set_within("p", "a", &"y".repeat(40), quota)
        .await
        .unwrap_err();
    assert!(
        matches!(
            big,
            KvError::OverLimit {
                limit: "kv_max_bytes",
                ..
            }
        ),
        "{big}"
    );
    // Overwriting in place is allowed when full.
    kv.set_within("p", "b", "z", quota).await.unwrap();
    kv.delete("p", "b").await.unwrap();
    kv.delete("p", "b").await.unwrap();
    assert_eq!(kv.usage("p").await.unwrap(), Usage { keys: 1, bytes: 11 });
    kv.set_within("p", "c", "x", quota).await.unwrap();
    // Shrinking a value is always allowed, even over a lowered quota.
    let tight = Quota {
        max_keys: 2,
        max_bytes: 3,
    };
    kv.set_within("p", "a", "0", tight).await.unwrap();
    assert_eq!(kv.usage("p").await.unwrap(), Usage { keys: 2, bytes: 4 });
    assert!(kv
        .set_within("p", "a", "01", tight)
        .await
        .unwrap_err()
        .to_string()
        .contains("kv_max_bytes = 3"));
    assert!(matches!(
        kv.set_within("p", "", "x", quota).await,
        Err(KvError::Refused(_))
    ));
    assert_eq!(kv.usage("q").await.unwrap(), Usage::default());
}

/// CRM last-known values: absent, kept, replaced, per source.
pub async fn crm_last_known(s: &Storage) {
    let crm = &s.crm;
    assert_eq!(crm.get("main", "e:a@x.com").await.unwrap(), None);
    crm.put("main", "e:a@x.com", b"one").await.unwrap();
    crm.put("main", "e:a@x.com", b"two").await.unwrap();
    assert_eq!(
        crm.get("main", "e:a@x.com").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(crm.get("other", "e:a@x.com").await.unwrap(), None);
}

/// Maintenance runs on a store holding answers and reports what is left.
pub async fn sweep_keeps_live_answers(s: &Storage) {
    let a = store(s, "/hook", "live", now_ms()).await;
    s.sweep().await.unwrap();
    assert_eq!(s.answers.get(&a.key()).await.unwrap(), Some(a));
}

/// Two hosts: a copy on B waits while A holds the key, then replays A's
/// answer; the queue, the kv and CRM values are shared.
// Run by the Redis backend (sled has one host per database).
#[allow(dead_code)]
pub async fn two_hosts_share_everything(a: &Storage, b: &Storage) {
    let key = DeliveryKey::new("/hook", "shared");
    let lease = leader(a.answers.claim(&key, LONG).await.unwrap());
    assert_eq!(b.answers.claim(&key, LONG).await.unwrap(), Claimed::Held);
    let answer = answer(&key, now_ms(), "A");
    assert_eq!(
        a.answers.complete(&lease, &answer).await.unwrap(),
        Completed::Stored
    );
    assert_eq!(
        b.answers.claim(&key, LONG).await.unwrap(),
        Claimed::Answered(answer)
    );

    let t = now_ms();
    a.events.enqueue("/ev", "e", t).await.unwrap();
    assert_eq!(
        b.events.enqueue("/ev", "e", t).await.unwrap(),
        Enqueued::Duplicate
    );
    let Next::Leased(e) = b.events.lease_next(t, LONG).await.unwrap() else {
        panic!("A's callback is due on B");
    };
    assert!(matches!(
        a.events.lease_next(t, LONG).await.unwrap(),
        Next::Idle(_)
    ));
    b.events.ack(&e).await.unwrap();
    assert_eq!(a.events.len().await.unwrap(), 0);

    let quota = Quota {
        max_keys: 1,
        max_bytes: 100,
    };
    a.kv.set_within("p", "k", "v", quota).await.unwrap();
    assert_eq!(b.kv.get("p", "k").await.unwrap().as_deref(), Some("v"));
    assert!(b.kv.set_within("p", "k2", "v", quota).await.is_err());
    a.crm.put("main", "d:x.com", b"r").await.unwrap();
    assert_eq!(
        b.crm.get("main", "d:x.com").await.unwrap().as_deref(),
        Some(&b"r"[..])
    );
}

/// The `skip_if` of a backend that is always there.
pub fn never() -> bool {
    false
}

/// Generate a `#[tokio::test]` per conformance case for a backend: `make`
/// is an `async fn(Limits) -> (G, Storage)`; with `two_hosts`, an
/// `async fn() -> (G, Storage, Storage)` giving two hosts on one store;
/// with `skip_if`, a `fn() -> bool` saying the backend is not there on
/// purpose (e.g. `ENRICHD_SKIP_REDIS_TESTS=1`): then each test returns at
/// once.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@cases $make, $crate::storage::conformance::never);
    };
    ($make:path, $two_hosts:path) => {
        $crate::conformance_tests!($make, $two_hosts, skip_if = $crate::storage::conformance::never);
    };
    ($make:path, $two_hosts:path, skip_if = $skip:path) => {
        $crate::conformance_tests!(@cases $make, $skip);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_two_hosts_share_everything() {
            if $skip() {
                return;
            }
            let (_guard, a, b) = $two_hosts().await;
            $crate::storage::conformance::two_hosts_share_everything(&a, &b).await;
        }
    };
    (@cases $make:path, $skip:path) => {
        mod conformance {
            use super::*;
            use $crate::storage::conformance as c;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        if $skip() {
                            return;
                        }
                        let (_guard, storage) = $make(c::limits()).await;
                        c::$name(&storage).await;
                    }
                };
            }
            case!(claim_complete_replay);
            case!(held_while_leased);
            case!(release_lets_the_next_claim_lead);
            case!(an_expired_lease_lets_another_claim_lead);
            case!(a_lost_lease_cannot_complete);
            case!(a_superseded_leader_overwrites_nothing);
            case!(list_and_find);
            case!(lease_ack_and_retry);
            case!(an_expired_event_lease_is_handed_out_again);
            case!(queue_head_is_the_oldest_in_line);
            case!(kv_quota_and_usage);
            case!(crm_last_known);
            case!(sweep_keeps_live_answers);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn answers_expire() {
                if $skip() {
                    return;
                }
                c::answers_expire(async |l| $make(l).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn enqueue_dedupes_and_refuses_when_full() {
                if $skip() {
                    return;
                }
                c::enqueue_dedupes_and_refuses_when_full(async |l| $make(l).await).await;
            }
        }
    };
}
