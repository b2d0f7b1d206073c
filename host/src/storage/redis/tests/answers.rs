//! The answers port on Redis beyond the shared suite: leases fenced across
//! two hosts, the index swept, `max_records` kept.

use std::time::Duration;

use super::{answer, limits, now_ms};
use crate::storage::conformance::{LONG as LEASE, PAST_SHORT, SHORT as SHORT_LEASE};
use crate::storage::redis::test_util::{host, redis_or_skip, two_hosts, unique_prefix};
use crate::storage::{Claimed, Completed, DeliveryKey, LeaseToken};

fn leader(claimed: Claimed) -> LeaseToken {
    match claimed {
        Claimed::Leader(token) => token,
        other => panic!("expected the lead, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_answers_are_invisible_and_swept_from_the_index() {
    let url = redis_or_skip!();
    let mut l = limits();
    l.retention = Duration::from_millis(400);
    let s = host(&url, &unique_prefix("expiry"), &l).await;
    let key = DeliveryKey::new("/r", "old");
    let token = leader(s.answers.claim(&key, LEASE).await.unwrap());
    s.answers
        .complete(&token, &answer(&key, now_ms(), "a"))
        .await
        .unwrap();
    assert!(s.answers.get(&key).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.answers.get(&key).await.unwrap(), None);
    assert!(s.answers.list(0, 10).await.unwrap().is_empty());
    assert!(s.answers.find("old", None).await.unwrap().is_empty());
    assert_eq!(s.answers.len().await.unwrap(), 1, "until swept");
    let report = s.sweep().await.unwrap();
    assert_eq!((report.expired, report.remaining), (1, 0));
    assert_eq!(s.answers.len().await.unwrap(), 0);
    // Expired: the next copy runs again.
    leader(s.answers.claim(&key, LEASE).await.unwrap());
}

#[tokio::test]
async fn max_records_evicts_the_oldest_answers() {
    let url = redis_or_skip!();
    let mut l = limits();
    l.max_records = 3;
    let s = host(&url, &unique_prefix("evict"), &l).await;
    let t = now_ms();
    for i in 0..5u64 {
        let key = DeliveryKey::new("/r", &format!("id{i}"));
        let token = leader(s.answers.claim(&key, LEASE).await.unwrap());
        s.answers
            .complete(&token, &answer(&key, t - 100 + i, "a"))
            .await
            .unwrap();
    }
    assert_eq!(s.answers.len().await.unwrap(), 3);
    for i in 0..5u64 {
        let live = s
            .answers
            .get(&DeliveryKey::new("/r", &format!("id{i}")))
            .await
            .unwrap();
        assert_eq!(live.is_some(), i >= 2, "id{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_claims_on_two_hosts_make_one_leader() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "sixteen", &limits()).await;
    let key = DeliveryKey::new("/r", "contended");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let host = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tokio::spawn(async move { host.answers.claim(&key, LEASE).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let leaders = results
        .iter()
        .filter(|r| matches!(r, Ok(Claimed::Leader(_))))
        .count();
    let held = results
        .iter()
        .filter(|r| matches!(r, Ok(Claimed::Held)))
        .count();
    assert_eq!((leaders, held), (1, 15), "{results:?}");
}

#[tokio::test]
async fn an_expired_lease_lets_the_other_host_lead() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "expired-lease", &limits()).await;
    let key = DeliveryKey::new("/r", "dead-leader");
    leader(a.answers.claim(&key, SHORT_LEASE).await.unwrap());
    assert_eq!(b.answers.claim(&key, LEASE).await.unwrap(), Claimed::Held);
    tokio::time::sleep(PAST_SHORT).await;
    let token = leader(b.answers.claim(&key, LEASE).await.unwrap());
    assert_eq!(
        b.answers
            .complete(&token, &answer(&key, now_ms(), "b"))
            .await
            .unwrap(),
        Completed::Stored
    );
}

#[tokio::test]
async fn a_leader_whose_lease_was_retaken_cannot_store_or_release() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "lease-lost", &limits()).await;
    let key = DeliveryKey::new("/r", "slow-leader");
    let late = leader(a.answers.claim(&key, SHORT_LEASE).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    let current = leader(b.answers.claim(&key, LEASE).await.unwrap());
    assert_ne!(late.token, current.token);
    assert_eq!(
        a.answers
            .complete(&late, &answer(&key, now_ms(), "a"))
            .await
            .unwrap(),
        Completed::LeaseLost
    );
    assert_eq!(a.answers.get(&key).await.unwrap(), None, "nothing written");
    // A's release does not end B's lease either.
    a.answers.release(&late).await.unwrap();
    assert_eq!(a.answers.claim(&key, LEASE).await.unwrap(), Claimed::Held);
    let by_b = answer(&key, now_ms(), "b");
    assert_eq!(
        b.answers.complete(&current, &by_b).await.unwrap(),
        Completed::Stored
    );
    assert_eq!(a.answers.get(&key).await.unwrap(), Some(by_b));
}

#[tokio::test]
async fn a_leader_whose_key_was_answered_is_superseded() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "superseded", &limits()).await;
    let key = DeliveryKey::new("/r", "answered-meanwhile");
    let late = leader(a.answers.claim(&key, SHORT_LEASE).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    let current = leader(b.answers.claim(&key, LEASE).await.unwrap());
    let by_b = answer(&key, now_ms(), "b");
    b.answers.complete(&current, &by_b).await.unwrap();
    assert_eq!(
        a.answers
            .complete(&late, &answer(&key, now_ms(), "a"))
            .await
            .unwrap(),
        Completed::Superseded(by_b.clone())
    );
    assert_eq!(b.answers.get(&key).await.unwrap(), Some(by_b));
}

#[tokio::test]
async fn list_pages_past_answers_redis_already_removed() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("list-gaps");
    let s = host(&url, &prefix, &limits()).await;
    let t = now_ms();
    for i in 0..4u64 {
        let key = DeliveryKey::new("/r", &format!("id{i}"));
        let token = leader(s.answers.claim(&key, LEASE).await.unwrap());
        s.answers
            .complete(&token, &answer(&key, t - 10 + i, "a"))
            .await
            .unwrap();
    }
    // The two newest answers vanish under their index entries (as when
    // Redis's TTL ran a moment before this host's clock).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}answer:2:/r:id3"))
        .arg(format!("{prefix}answer:2:/r:id2"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<String> = s
        .answers
        .list(0, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["id1", "id0"]);
}

/// A raw connection to the test Redis, to read and plant values.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test]
async fn answers_are_stored_in_the_codec_format_byte_exact() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("codec");
    let s = host(&url, &prefix, &limits()).await;
    // A route and id with the member separator, NUL and non-ASCII in them,
    // and a body with bytes JSON would escape.
    let key = DeliveryKey::new("/r:x", "id:\0é");
    let mut a = answer(&key, now_ms(), "a");
    a.body = "{ \"z\": \"\\u00e9é\\n\", \"n\":1.50 }\r\n".into();
    let token = leader(s.answers.claim(&key, LEASE).await.unwrap());
    assert_eq!(
        s.answers.complete(&token, &a).await.unwrap(),
        Completed::Stored
    );
    let mut conn = raw(&url).await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!(
            "{prefix}answer:{}",
            super::super::answers::member(&key)
        ))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored[0], crate::storage::codec::VERSION_1);
    assert_eq!(stored, crate::storage::codec::encode(&a));
    assert_eq!(s.answers.get(&key).await.unwrap(), Some(a.clone()));
    assert_eq!(
        s.answers.claim(&key, LEASE).await.unwrap(),
        Claimed::Answered(a.clone())
    );
    assert_eq!(
        s.answers.find(&key.id, None).await.unwrap(),
        vec![a.clone()]
    );
    let listed = s.answers.list(0, 10).await.unwrap();
    assert_eq!(listed, vec![a.summary()]);
    // A late leader on another lease gets the stored answer back, decoded.
    let other = DeliveryKey::new("/r:x", "id:\0é");
    let late = LeaseToken {
        key: other,
        token: "someone else".into(),
    };
    assert_eq!(
        s.answers
            .complete(&late, &answer(&key, now_ms(), "b"))
            .await
            .unwrap(),
        Completed::Superseded(a)
    );
}

#[tokio::test]
async fn json_answers_of_the_previous_version_are_still_served() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("legacy");
    let s = host(&url, &prefix, &limits()).await;
    let key = DeliveryKey::new("/r", "old");
    let old = answer(&key, now_ms(), "from before the upgrade");
    let member = super::super::answers::member(&key);
    // As the previous version's complete.lua left it.
    let mut conn = raw(&url).await;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}answer:{member}"))
        .arg(serde_json::to_string(&old).unwrap())
        .cmd("ZADD")
        .arg(format!("{prefix}answers:by-time"))
        .arg(old.stored_at_ms)
        .arg(&member)
        .cmd("SADD")
        .arg(format!("{prefix}answers:by-id:old"))
        .arg("/r")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(s.answers.get(&key).await.unwrap(), Some(old.clone()));
    assert_eq!(
        s.answers.claim(&key, LEASE).await.unwrap(),
        Claimed::Answered(old.clone())
    );
    assert_eq!(
        s.answers.find("old", None).await.unwrap(),
        vec![old.clone()]
    );
    assert_eq!(s.answers.list(0, 10).await.unwrap(), vec![old.summary()]);
    let late = LeaseToken {
        key: key.clone(),
        token: "late".into(),
    };
    assert_eq!(
        s.answers
            .complete(&late, &answer(&key, now_ms(), "new"))
            .await
            .unwrap(),
        Completed::Superseded(old)
    );
}

#[tokio::test]
async fn a_corrupt_answer_is_an_error_not_a_panic() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("corrupt");
    let s = host(&url, &prefix, &limits()).await;
    let key = DeliveryKey::new("/r", "bad");
    let mut conn = raw(&url).await;
    for value in [&b"\x01short"[..], b"\x07garbage", b"{not json", b""] {
        let _: () = redis::cmd("SET")
            .arg(format!(
                "{prefix}answer:{}",
                super::super::answers::member(&key)
            ))
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
        let err = s.answers.get(&key).await.unwrap_err();
        assert!(
            matches!(err, crate::storage::StorageError::Corrupt { .. }),
            "{value:?}: {err}"
        );
    }
}
