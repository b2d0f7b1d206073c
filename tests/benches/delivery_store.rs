//! Delivery store benchmark (issue 4): the cost of storing an answer under
//! each flush policy, and of a replay lookup, measured in one run. Prints
//! the ratio of `flush = "always"` to `flush = "periodic"`.
//!
//! Run with `cargo bench -p enrichd-tests --bench delivery_store`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use enrichd::store::{DeliveryStore, FlushPolicy, StoreSettings, StoredDelivery};

const GROUP: &str = "store_answer";

fn store(dir: &Path, flush: FlushPolicy) -> DeliveryStore {
    let db = sled::Config::new()
        .path(dir.join(format!("{flush:?}")))
        .flush_every_ms(Some(enrichd::config::DEFAULT_FLUSH_EVERY_MS))
        .open()
        .expect("sled");
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

/// A realistic answer: the seed payload's enriched envelope and its record.
fn answer(id: String) -> StoredDelivery {
    let body = r#"{"status":"success","message":"3 actions from crm-enrich (2), keyword-router (1)","actions":[{"name":"Apply CRM context","type":"setCustomFields","value":{"claimNumber":"CLM-556677","policyNumber":"POL-889900","region":"EMEA"}},{"name":"Tag VIP customers","type":"tag","value":{"tags":["VIP"]}}]}"#;
    StoredDelivery {
        route: "/emailgistics-webhook".into(),
        id,
        stored_at_ms: 1_790_000_000_000,
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
        let s = store(dir.path(), flush);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let d = answer(format!("id-{}", counter.fetch_add(1, Ordering::Relaxed)));
                let s = s.clone();
                async move { s.put(&d).await.expect("put") }
            });
        });
    }
    let s = store(dir.path(), FlushPolicy::Periodic);
    rt.block_on(s.put(&answer("replayed".into()))).expect("put");
    group.bench_function("replay-lookup", |b| {
        b.iter(|| {
            s.get("/emailgistics-webhook", "replayed", 1_790_000_000_001)
                .expect("get")
        })
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
