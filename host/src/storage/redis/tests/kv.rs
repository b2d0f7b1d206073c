//! Plugin kv and CRM last-known values on Redis: the quota script agrees
//! with `over_quota`, and holds against concurrent writers on two hosts.

use super::limits;
use crate::storage::kv::{over_quota, KvError, Quota, Usage};
use crate::storage::redis::test_util::{host, redis_or_skip, two_hosts, unique_prefix};

/// Every combination of quota, usage before and write (new key or
/// overwrite, growing or shrinking) is decided alike by the Lua script and
/// by `over_quota`, and the usage follows the write exactly.
#[tokio::test]
async fn the_quota_script_agrees_with_over_quota() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("quota-rule");
    let s = host(&url, &prefix, &limits()).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut case = 0;
    let mut refusals = 0;
    for max_keys in [0u64, 1, 2, 3] {
        for max_bytes in [0u64, 4, 10, 12, 30, u64::MAX] {
            for (before_keys, before_bytes) in [(0u64, 0u64), (1, 4), (2, 10), (3, 12), (3, 40)] {
                // None: a new key; Some(len): overwrite a value of len bytes.
                for old in [None, Some(0usize), Some(2), Some(9)] {
                    // The usage before must include the old entry.
                    let old_bytes = old.map_or(0, |len| 2 + len as u64);
                    if old.is_some() && (before_keys == 0 || old_bytes > before_bytes) {
                        continue;
                    }
                    for new in [0usize, 2, 9] {
                        case += 1;
                        let ns = format!("n{case}");
                        let mut setup = redis::pipe();
                        setup
                            .cmd("HSET")
                            .arg(format!("{prefix}kv-usage:{ns}"))
                            .arg("keys")
                            .arg(before_keys)
                            .arg("bytes")
                            .arg(before_bytes);
                        if let Some(len) = old {
                            setup
                                .cmd("HSET")
                                .arg(format!("{prefix}kv:{ns}"))
                                .arg("kk")
                                .arg("o".repeat(len));
                        }
                        let _: () = setup.query_async(&mut conn).await.unwrap();
                        let value = "n".repeat(new);
                        let before = Usage {
                            keys: before_keys,
                            bytes: before_bytes,
                        };
                        let after = Usage {
                            keys: before_keys + u64::from(old.is_none()),
                            bytes: before_bytes + 2 + new as u64 - old_bytes,
                        };
                        let quota = Quota {
                            max_keys,
                            max_bytes,
                        };
                        let expected = over_quota(&ns, quota, before, after);
                        let got = s.kv.set_within(&ns, "kk", &value, quota).await;
                        let usage = s.kv.usage(&ns).await.unwrap();
                        match (expected, got) {
                            (None, Ok(())) => assert_eq!(usage, after, "case {case}"),
                            (
                                Some(KvError::OverLimit { limit: want, .. }),
                                Err(KvError::OverLimit { limit: got, .. }),
                            ) => {
                                refusals += 1;
                                assert_eq!(want, got, "case {case}");
                                assert_eq!(usage, before, "case {case}: nothing written");
                            }
                            (want, got) => {
                                panic!("case {case}: {quota:?} {before:?}->{after:?}: rule {want:?}, script {got:?}")
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        refusals > 50 && refusals < case - 50,
        "{refusals} of {case}: both outcomes covered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_hosts_cannot_overshoot_the_quota() {
    let url = redis_or_skip!();
    let (a, b) = two_hosts(&url, "kv-race", &limits()).await;
    // Ten keys, or 100 bytes: each write is 10 bytes ("kNN" + 7).
    for (quota, limit) in [
        (
            Quota {
                max_keys: 10,
                max_bytes: u64::MAX,
            },
            "kv_max_keys",
        ),
        (
            Quota {
                max_keys: u64::MAX,
                max_bytes: 100,
            },
            "kv_max_bytes",
        ),
    ] {
        let ns = limit.to_owned();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let host = if i % 2 == 0 { a.clone() } else { b.clone() };
                let ns = ns.clone();
                tokio::spawn(async move {
                    host.kv
                        .set_within(&ns, &format!("k{i:02}"), "1234567", quota)
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => ok += 1,
                Err(KvError::OverLimit { limit: l, .. }) => assert_eq!(l, limit),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 10, "{limit}");
        assert_eq!(
            b.kv.usage(&ns).await.unwrap(),
            Usage {
                keys: 10,
                bytes: 100
            }
        );
        let kept = keys_held(&a, &ns).await;
        assert_eq!(kept.len(), 10);
        // Full, but a record can still be updated in place.
        a.kv.set_within(&ns, &kept[0], "7654321", quota)
            .await
            .unwrap();
        assert!(a.kv.set_within(&ns, "new", "1234567", quota).await.is_err());
    }
}

/// The keys of `ns` that hold a value.
async fn keys_held(s: &crate::storage::Storage, ns: &str) -> Vec<String> {
    let mut kept = Vec::new();
    for i in 0..40 {
        let key = format!("k{i:02}");
        if s.kv.get(ns, &key).await.unwrap().is_some() {
            kept.push(key);
        }
    }
    kept
}

#[tokio::test]
async fn crm_last_known_values_are_shared_and_expire() {
    let url = redis_or_skip!();
    let prefix = unique_prefix("crm");
    let (a, b) = (
        host(&url, &prefix, &limits()).await,
        host(&url, &prefix, &limits()).await,
    );
    a.crm.put("src:1", "a@x.test", b"\x00{json}").await.unwrap();
    assert_eq!(
        b.crm.get("src:1", "a@x.test").await.unwrap().as_deref(),
        Some(&b"\x00{json}"[..])
    );
    assert_eq!(
        b.crm.get("src", "1:a@x.test").await.unwrap(),
        None,
        "no collision"
    );
    b.crm.put("src:1", "a@x.test", b"new").await.unwrap();
    assert_eq!(
        a.crm.get("src:1", "a@x.test").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}crm:5:src:1:a@x.test"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let max = crate::storage::crm::LAST_KNOWN_TTL.as_millis() as i64;
    assert!(ttl > max - 60_000 && ttl <= max, "{ttl}");
}
