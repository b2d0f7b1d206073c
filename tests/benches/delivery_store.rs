//! Delivery store benchmark (issue 4): the cost of storing an answer under
//! each flush policy, and of a replay lookup, measured in one run. Prints
//! the ratio of `flush = "always"` to `flush = "periodic"`.
//!
//! Run with `cargo bench -p enrichd-tests --bench delivery_store`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use enrichd::storage::{
    Backend, Claimed, DeliveryKey, FlushPolicy, Limits, Settings, SledSettings, Storage,
    StoredDelivery,
};

const GROUP: &str = "store_answer";

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
    if let Some(get) = enrichd_tests::criterion_median_ns(GROUP, "replay-lookup") {
        println!("replay lookup: {:.1} µs", get / 1e3);
    }
}
