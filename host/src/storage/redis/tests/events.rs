//! The event queue on Redis beyond the shared suite: leasing, duplicate
//! suppression and the cap across two hosts, the waiting set, corrupt and
//! lost entries, the group's consumers.

use std::collections::HashSet;
use std::time::Duration;

use super::{limits, now_ms};
use crate::storage::redis::test_util::{host, redis_or_skip, two_hosts, unique_prefix};
use crate::storage::{Enqueued, Next, QueueError, QueuedEvent, Storage};

const LEASE: Duration = Duration::from_secs(30);

fn leased(next: Next) -> QueuedEvent {
    match next {
        Next::Leased(event) => event,
        other => panic!("expected a leased callback, got {other:?}"),
    }
}

#[tokio::test]
async fn a_waiting_retry_is_named_by_idle_and_never_doubled() {
    let url = redis_or_skip!();
    let s = host(&url, &unique_prefix("retry"), &limits()).await;
    let t = now_ms();
    s.events.enqueue("/el", "body", t).await.unwrap();
    let event = leased(s.events.lease_next(t, LEASE).await.unwrap());
    s.events.retry_at(&event, 1, t + 60_000).await.unwrap();
    assert_eq!(s.events.len().await.unwrap(), 1);
    assert_eq!(
        s.events.lease_next(t, LEASE).await.unwrap(),
        Next::Idle(Some(t + 60_000))
    );
    // Retrying it again (stale handle) does not bring back a second copy.
    s.events.retry_at(&event, 1, t).await.unwrap();
    assert_eq!(s.events.len().await.unwrap(), 1);
    let again = leased(s.events.lease_next(t + 60_000, LEASE).await.unwrap());
    assert_eq!(again.body, "body");
    assert_eq!(
        (again.attempts, again.not_before_ms, again.received_at_ms),
        (1, t + 60_000, t)
    );
    assert_ne!(again.id, event.id);
    s.events.ack(&again).await.unwrap();
    assert_eq!(s.events.len().await.unwrap(), 0);
}

#[tokio::test]
async fn the_dedupe_window_ends_and_the_sweep_forgets() {
    let url = redis_or_skip!();
    let mut l = limits();
    l.dedupe_window = Duration::from_millis(300);
    let s = host(&url, &unique_prefix("window"), &l).await;
    let t = now_ms();
    assert_eq!(
        s.events.enqueue("/el", "x", t).await.unwrap(),
        Enqueued::New
    );
    assert_eq!(
        s.events.enqueue("/el", "x", t + 299).await.unwrap(),
        Enqueued::Duplicate
    );
    assert_eq!(
        s.events.enqueue("/el", "x", t + 300).await.unwrap(),
        Enqueued::New
    );
    s.events.enqueue("/el", "y", t).await.unwrap();
    assert_eq!(s.events.seen_len().await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = s.sweep().await.unwrap();
    // "y" (seen at t) is forgotten; "x" was seen again at t + 300 … also
    // past the window by now only if the clock passed t + 600.
    assert!(report.seen_forgotten >= 1, "{report:?}");
    assert_eq!(
        s.events.seen_len().await.unwrap(),
        2 - report.seen_forgotten
    );
}

#[tokio::test]
async fn a_corrupt_entry_is_dropped_and_the_next_one_leased() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("corrupt");
    let s = host(&url, &prefix, &limits()).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}events:stream"))
        .arg("*")
        .arg("e")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let t = now_ms();
    s.events.enqueue("/el", "good", t).await.unwrap();
    assert_eq!(s.events.len().await.unwrap(), 2);
    let event = leased(s.events.lease_next(t, LEASE).await.unwrap());
    assert_eq!(event.body, "good");
    assert_eq!(s.events.len().await.unwrap(), 1, "the corrupt one is gone");
}

#[tokio::test]
async fn an_event_leased_by_a_dead_host_is_leased_by_another_after_the_lease() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "takeover", &limits()).await;
    let lease = Duration::from_millis(300);
    let t = now_ms();
    a.events.enqueue("/el", "orphan", t).await.unwrap();
    let by_a = leased(a.events.lease_next(t, lease).await.unwrap());
    // A "dies": it never acks. Until the lease ends, B gets nothing.
    assert_eq!(
        b.events.lease_next(t, lease).await.unwrap(),
        Next::Idle(None)
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let by_b = leased(b.events.lease_next(now_ms(), lease).await.unwrap());
    assert_eq!(
        (by_b.id.as_str(), by_b.body.as_str()),
        (by_a.id.as_str(), "orphan")
    );
    b.events.ack(&by_b).await.unwrap();
    assert_eq!(a.events.len().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        a.events.lease_next(now_ms(), lease).await.unwrap(),
        Next::Idle(None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callback_sent_to_both_hosts_is_queued_once() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "dedupe-across", &limits()).await;
    let t = now_ms();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let host = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { host.events.enqueue("/el", "same body", t).await })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() == Enqueued::New {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    assert_eq!(b.events.len().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_lease_each_callback_once() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "lease-once", &limits()).await;
    let t = now_ms();
    for i in 0..30 {
        a.events
            .enqueue("/el", &format!("event {i}"), t)
            .await
            .unwrap();
    }
    let drain = |s: Storage| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Next::Leased(e) = s.events.lease_next(now_ms(), LEASE).await.unwrap() {
                s.events.ack(&e).await.unwrap();
                got.push(e.body);
            }
            got
        })
    };
    let (from_a, from_b) = (drain(a.clone()), drain(b.clone()));
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    let all: HashSet<_> = from_a.iter().chain(&from_b).cloned().collect();
    assert_eq!(from_a.len() + from_b.len(), 30, "none twice");
    assert_eq!(all.len(), 30, "none lost");
    assert_eq!(a.events.len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_across_hosts_and_counts_waiting_retries() {
    let url = redis_or_skip!();
    let mut l = limits();
    l.max_queued = 4;
    let (a, b) = two_hosts(&url, "cap", &l).await;
    let t = now_ms();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let host = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { host.events.enqueue("/el", &format!("e{i}"), t).await })
        })
        .collect();
    let (mut new, mut full) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Enqueued::New) => new += 1,
            Err(QueueError::Full(4)) => full += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((new, full), (4, 8));
    assert_eq!(a.events.max_queued(), 4);
    // A callback waiting for its retry still holds its place.
    let e = leased(a.events.lease_next(t, LEASE).await.unwrap());
    a.events.retry_at(&e, 1, t + 60_000).await.unwrap();
    assert!(matches!(
        b.events.enqueue("/el", "late", t).await,
        Err(QueueError::Full(4))
    ));
    let e = leased(b.events.lease_next(t, LEASE).await.unwrap());
    b.events.ack(&e).await.unwrap();
    assert_eq!(
        b.events.enqueue("/el", "late", t).await.unwrap(),
        Enqueued::New
    );
}

#[tokio::test]
async fn idle_consumers_holding_nothing_are_forgotten() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("consumers");
    let (a, b) = (
        host(&url, &prefix, &limits()).await,
        host(&url, &prefix, &limits()).await,
    );
    let t = now_ms();
    a.events.enqueue("/el", "held by a", t).await.unwrap();
    leased(a.events.lease_next(t, LEASE).await.unwrap());
    a.events.enqueue("/el", "done by b", t).await.unwrap();
    let done = leased(b.events.lease_next(t, LEASE).await.unwrap());
    b.events.ack(&done).await.unwrap();
    let consumers = || async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(format!("{prefix}events:stream"))
            .arg("enrichd")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.len()
    };
    assert_eq!(consumers().await, 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A third process: it forgets B (idle, nothing held), keeps A (holds one).
    let settings = crate::storage::RedisSettings {
        url: url.clone(),
        key_prefix: prefix.clone(),
    };
    let third = crate::storage::redis::connect(&settings, &limits(), crate::clock::Clock::new())
        .await
        .unwrap();
    let forgotten =
        crate::storage::redis::events::forget_idle_consumers(&third, Duration::from_millis(10))
            .await
            .unwrap();
    assert_eq!((forgotten, consumers().await), (1, 1));
    // B reads again as if nothing happened.
    b.events.enqueue("/el", "for b", t).await.unwrap();
    assert_eq!(
        leased(b.events.lease_next(t, LEASE).await.unwrap()).body,
        "for b"
    );
}

#[tokio::test]
async fn a_lost_stream_and_group_are_created_again() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("lost-group");
    let s = host(&url, &prefix, &limits()).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // As after a Redis restart without its data, or an operator's DEL.
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}events:stream"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let t = now_ms();
    s.events.enqueue("/el", "after the loss", t).await.unwrap();
    assert_eq!(
        leased(s.events.lease_next(t, LEASE).await.unwrap()).body,
        "after the loss"
    );
}
