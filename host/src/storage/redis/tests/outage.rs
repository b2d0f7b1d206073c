//! Redis stopped under a running host: port calls fail `Unavailable`
//! quickly, and work again once Redis is back, without reopening.

use std::time::{Duration, Instant};

use super::{answer, limits, now_ms};
use crate::storage::redis::test_util::{host, skipped, unique_prefix, OwnRedis};
use crate::storage::{
    Claimed, Completed, DeliveryKey, Enqueued, Next, QueueError, RedisSettings, StorageError,
};

/// A call while Redis is down must fail within this: far below the
/// delivery budget, so the sender gets its 503 at once.
const FAIL_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn redis_down_is_unavailable_at_once_and_back_without_reopening() {
    if skipped() {
        return;
    }
    let redis = OwnRedis::start();
    let s = host(&redis.url(), &unique_prefix("outage"), &limits()).await;
    let key = DeliveryKey::new("/r", "before");
    let Claimed::Leader(token) = s
        .answers
        .claim(&key, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("first claim leads");
    };
    let stored = answer(&key, now_ms(), "a");
    assert_eq!(
        s.answers.complete(&token, &stored).await.unwrap(),
        Completed::Stored
    );
    let t = now_ms();
    assert_eq!(
        s.events.enqueue("/el", "queued before", t).await.unwrap(),
        Enqueued::New
    );

    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let claim = s
            .answers
            .claim(&DeliveryKey::new("/r", "during"), Duration::from_secs(30))
            .await;
        assert!(
            matches!(claim, Err(StorageError::Unavailable(_))),
            "{claim:?}"
        );
        let enqueue = s.events.enqueue("/el", "during", t).await;
        assert!(
            matches!(
                enqueue,
                Err(QueueError::Storage(StorageError::Unavailable(_)))
            ),
            "{enqueue:?}"
        );
        assert!(s.kv.get("p", "k").await.is_err());
        assert!(s.crm.get("src", "k").await.is_err());
        assert!(
            started.elapsed() < FAIL_WITHIN * 4,
            "four calls took {:?}",
            started.elapsed()
        );
    }

    redis.launch();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.answers.get(&key).await {
            Ok(got) => {
                assert_eq!(got, Some(stored.clone()), "the answer survived (AOF)");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnection: {e}"),
        }
    }
    let Next::Leased(event) = s
        .events
        .lease_next(now_ms(), Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("the queued callback survived");
    };
    assert_eq!(event.body, "queued before");
    s.events.ack(&event).await.unwrap();
    assert_eq!(
        s.events.enqueue("/el", "after", now_ms()).await.unwrap(),
        Enqueued::New
    );
}

#[tokio::test]
async fn each_call_while_down_fails_within_the_bound() {
    if skipped() {
        return;
    }
    let redis = OwnRedis::start();
    let s = host(&redis.url(), &unique_prefix("bound"), &limits()).await;
    redis.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let got = s.events.lease_next(now_ms(), Duration::from_secs(30)).await;
        assert!(matches!(got, Err(StorageError::Unavailable(_))), "{got:?}");
        assert!(
            started.elapsed() < FAIL_WITHIN,
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_wrong_url_fails_at_open_quickly_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let settings = RedisSettings {
        url: "redis://enrichd:hunter2@127.0.0.1:1/0".into(),
        key_prefix: "enrichd:".into(),
    };
    let started = Instant::now();
    let Err(e) =
        crate::storage::redis::open(&settings, &limits(), crate::clock::Clock::new()).await
    else {
        panic!("opened a Redis that is not there");
    };
    let message = e.to_string();
    assert!(
        started.elapsed() < FAIL_WITHIN,
        "took {:?}",
        started.elapsed()
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(
        message.contains("redis") && message.contains("127.0.0.1:1"),
        "{message}"
    );
}

#[tokio::test]
async fn a_frozen_redis_is_unavailable_within_the_bound_then_back() {
    if skipped() {
        return;
    }
    let redis = OwnRedis::start();
    let s = host(&redis.url(), &unique_prefix("frozen"), &limits()).await;
    s.kv.set_within("p", "k", "v", crate::storage::Quota::UNLIMITED)
        .await
        .unwrap();
    redis.freeze();
    for _ in 0..2 {
        let started = Instant::now();
        let got = s.kv.get("p", "k").await;
        assert!(got.is_err(), "{got:?}");
        assert!(
            started.elapsed() < FAIL_WITHIN,
            "took {:?}",
            started.elapsed()
        );
    }
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.kv.get("p", "k").await {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some("v"));
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    }
}

#[tokio::test]
async fn a_wrong_password_fails_at_open_without_the_password() {
    let Some(url) = crate::storage::redis::test_util::redis_url() else {
        return;
    };
    // The test Redis has no password (or another one): AUTH fails.
    let url = url.replacen("redis://", "redis://enrichd:hunter2@", 1);
    let settings = RedisSettings {
        url,
        key_prefix: "enrichd:".into(),
    };
    let Err(e) =
        crate::storage::redis::open(&settings, &limits(), crate::clock::Clock::new()).await
    else {
        panic!("opened with a wrong password");
    };
    let message = e.to_string();
    eprintln!("{message}");
    assert!(!message.contains("hunter2"), "{message}");
}
