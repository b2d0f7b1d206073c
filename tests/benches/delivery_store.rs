//! Delivery store benchmark (issue 4): the cost of storing an answer under
//! each flush policy, and of a replay lookup, measured in one run. Prints
//! the ratio of `flush = "always"` to `flush = "periodic"`.
//!
//! Issue 11: also 32 answers stored at once (what the group commit shares:
//! one transaction and one flush per batch), and a read of the store
//! (what a claim and a replay do) on the calling thread against a trip to
//! tokio's blocking pool, for a cached record and for one whose page must
//! be read back (a store far bigger than sled's cache).
//!
//! Run with `cargo bench -p enrichd-tests --bench delivery_store`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use enrichd::storage::answers::StoreSettings;
use enrichd::storage::sled::answers::DeliveryStore;
use enrichd::storage::{
    Backend, Claimed, DeliveryKey, FlushPolicy, Limits, Settings, SledSettings, Storage,
    StoredDelivery,
};

const GROUP: &str = "store_answer";
/// Answers stored at once in the concurrent bench: the connections of the
/// load bench (`wrk -c32`).
const CONCURRENT: u64 = 32;
/// Records in the store of the cold-read bench, and its sled cache: the
/// store is many times the cache, so most reads of a random key read a
/// page back from the files (from the OS page cache, as on a busy host).
const COLD_RECORDS: u64 = 50_000;
const COLD_CACHE_BYTES: u64 = 1 << 20;

fn store(rt: &tokio::runtime::Runtime, dir: &Path, flush: FlushPolicy) -> Storage {
    let settings = Settings {
        backend: Backend::Sled(SledSettings {
            data_dir: dir.join(format!("{flush:?}")),
            flush,
            flush_every_ms: enrichd::config::DEFAULT_FLUSH_EVERY_MS,
            cache_bytes: enrichd::config::DEFAULT_SLED_CACHE_BYTES,
        }),
        limits: Limits {
            retention: Duration::from_secs(72 * 3600),
            max_records: 10_000_000,
            dedupe_window: Duration::from_secs(3600),
            max_queued: 1000,
        },
    };
    rt.block_on(enrichd::storage::open(
        &settings,
        enrichd::clock::Clock::new(),
    ))
    .expect("store")
}

/// Claim the answer's key and complete it: what a leader does.
async fn put(s: &Storage, d: &StoredDelivery) {
    let Claimed::Leader(lease) = s
        .answers
        .claim(&d.key(), Duration::from_secs(60))
        .await
        .expect("claim")
    else {
        panic!("a new key is led");
    };
    s.answers.complete(&lease, d).await.expect("complete");
}

/// A realistic answer: the seed payload's enriched envelope and its record.
fn answer(id: String) -> StoredDelivery {
    let body = r#"{"status":"success","message":"3 actions from crm-enrich (2), keyword-router (1)","actions":[{"name":"Apply CRM context","type":"setCustomFields","value":{"claimNumber":"CLM-556677","policyNumber":"POL-889900","region":"EMEA"}},{"name":"Tag VIP customers","type":"tag","value":{"tags":["VIP"]}}]}"#;
    StoredDelivery {
        route: "/emailgistics-webhook".into(),
        id,
        stored_at_ms: enrichd::clock::Clock::new().now_ms(),
        status: 200,
        body: body.into(),
        record: serde_json::json!({"plugins": [{"plugin": "crm-enrich", "outcome": "applied", "elapsedUs": 41}]}),
    }
}

/// A delivery store of its own (no ports) in `dir`, with `cache_bytes` of
/// sled cache.
fn bare_store(dir: &Path, cache_bytes: u64, flush: FlushPolicy) -> DeliveryStore {
    let db = enrichd::storage::sled::open_db(&SledSettings {
        data_dir: dir.to_path_buf(),
        flush,
        flush_every_ms: enrichd::config::DEFAULT_FLUSH_EVERY_MS,
        cache_bytes,
    })
    .expect("db");
    DeliveryStore::open(
        &db,
        StoreSettings {
            retention: Duration::from_secs(72 * 3600),
            max_records: 10_000_000,
            flush,
        },
    )
    .expect("store")
}

/// Read `id` on the calling thread, or (`blocking`) on tokio's blocking pool.
async fn read(store: &Arc<DeliveryStore>, id: String, blocking: bool) {
    let now = enrichd::clock::Clock::new().now_ms();
    let found = if blocking {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.get("/emailgistics-webhook", &id, now))
            .await
            .expect("join")
    } else {
        store.get("/emailgistics-webhook", &id, now)
    };
    assert!(found.expect("get").is_some());
}

/// The reads: cached and cold, each in place and through the blocking pool.
fn bench_reads(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
) {
    let hot = Arc::new(bare_store(
        &dir.join("hot"),
        enrichd::config::DEFAULT_SLED_CACHE_BYTES,
        FlushPolicy::Periodic,
    ));
    rt.block_on(hot.put(&answer("hot".into()))).expect("put");
    let cold = Arc::new(bare_store(
        &dir.join("cold"),
        COLD_CACHE_BYTES,
        FlushPolicy::Periodic,
    ));
    rt.block_on(async {
        let mut puts = tokio::task::JoinSet::new();
        for i in 0..COLD_RECORDS {
            let cold = cold.clone();
            puts.spawn(async move { cold.put(&answer(format!("cold-{i}"))).await });
            if puts.len() >= 64 {
                puts.join_next()
                    .await
                    .expect("put")
                    .expect("join")
                    .expect("put");
            }
        }
        while let Some(put) = puts.join_next().await {
            put.expect("join").expect("put");
        }
    });
    // A multiplicative step through the keys: each read is far from the last.
    let next = AtomicU64::new(0);
    let cold_id = || {
        format!(
            "cold-{}",
            next.fetch_add(7919, Ordering::Relaxed) % COLD_RECORDS
        )
    };
    for (name, store, blocking) in [
        ("get-cached-in-place", &hot, false),
        ("get-cached-blocking-pool", &hot, true),
        ("get-cold-in-place", &cold, false),
        ("get-cold-blocking-pool", &cold, true),
    ] {
        let is_cold = name.contains("cold");
        c.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                let id = if is_cold { cold_id() } else { "hot".to_owned() };
                read(store, id, blocking)
            })
        });
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = Criterion::default().configure_from_args();
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group(GROUP);
    for (name, flush) in [
        ("always", FlushPolicy::Always),
        ("periodic", FlushPolicy::Periodic),
    ] {
        let s = store(&rt, dir.path(), flush);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let d = answer(format!("id-{}", counter.fetch_add(1, Ordering::Relaxed)));
                let s = s.clone();
                async move { put(&s, &d).await }
            });
        });
    }
    let s = store(&rt, dir.path(), FlushPolicy::Always);
    let name = format!("always-x{CONCURRENT}");
    group.bench_function(&name, |b| {
        b.to_async(&rt).iter(|| {
            let s = s.clone();
            let first = counter.fetch_add(CONCURRENT, Ordering::Relaxed);
            async move {
                let mut puts = tokio::task::JoinSet::new();
                for i in first..first + CONCURRENT {
                    let s = s.clone();
                    puts.spawn(async move { put(&s, &answer(format!("id-{i}"))).await });
                }
                puts.join_all().await;
            }
        });
    });
    bench_reads(&mut group, &rt, dir.path());
    let s = store(&rt, dir.path(), FlushPolicy::Periodic);
    rt.block_on(put(&s, &answer("replayed".into())));
    let key = DeliveryKey::new("/emailgistics-webhook", "replayed");
    group.bench_function("replay-lookup", |b| {
        b.to_async(&rt)
            .iter(|| async { s.answers.get(&key).await.expect("get").expect("stored") })
    });
    group.finish();
    c.final_summary();

    println!("\n== delivery store summary (medians of this run) ==");
    if let (Some(always), Some(periodic)) = (
        enrichd_tests::criterion_median_ns(GROUP, "always"),
        enrichd_tests::criterion_median_ns(GROUP, "periodic"),
    ) {
        println!(
            "store an answer: flush=always {:.1} µs, flush=periodic {:.1} µs -> always costs {:.1}x periodic ({:.2} ms added per delivery)",
            always / 1e3,
            periodic / 1e3,
            always / periodic,
            (always - periodic) / 1e6
        );
    }
    if let Some(x) = enrichd_tests::criterion_median_ns(GROUP, &format!("always-x{CONCURRENT}")) {
        println!(
            "store {CONCURRENT} answers at once, flush=always: {:.1} µs per answer",
            x / 1e3 / CONCURRENT as f64
        );
    }
    if let Some(get) = enrichd_tests::criterion_median_ns(GROUP, "replay-lookup") {
        println!("replay lookup: {:.1} µs", get / 1e3);
    }
    for name in [
        "get-cached-in-place",
        "get-cached-blocking-pool",
        "get-cold-in-place",
        "get-cold-blocking-pool",
    ] {
        if let Some(get) = enrichd_tests::criterion_median_ns(GROUP, name) {
            println!("{name}: {:.1} µs", get / 1e3);
        }
    }
}
