//! CRM lookup benchmark (issue 5): a lookup answered from the cache against
//! a miss that goes to a REST CRM on loopback, measured in one run. Prints
//! both and their ratio.
//!
//! Run with `cargo bench -p enrichd-tests --bench crm_lookup`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use enrichd::crm::cache::{CacheSettings, CrmSource};
use enrichd::crm::http::{HttpCrm, HttpSettings};
use enrichd::crm::Backend;
use enrichd_tests::crm_server::FakeCrm;
use tokio::time::Instant;

const GROUP: &str = "crm_lookup";
const SENDER: &str = "rstorrie@pinnilly.com";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let crm = rt.block_on(FakeCrm::start());
    crm.add_customer(
        SENDER,
        serde_json::json!({"claimNumber": "CLM-9", "region": "EMEA", "tier": "gold"}),
    );
    let data = tempfile::tempdir().expect("temp dir");
    let storage = rt
        .block_on(enrichd::storage::open(
            &enrichd::storage::Settings {
                backend: enrichd::storage::Backend::Sled(enrichd::storage::SledSettings {
                    data_dir: data.path().to_path_buf(),
                    flush: enrichd::storage::FlushPolicy::Periodic,
                    flush_every_ms: enrichd::config::DEFAULT_FLUSH_EVERY_MS,
                    cache_bytes: enrichd::config::DEFAULT_SLED_CACHE_BYTES,
                }),
                limits: enrichd::storage::Limits {
                    retention: Duration::from_secs(3600),
                    max_records: 1000,
                    dedupe_window: Duration::from_secs(3600),
                    max_queued: 1000,
                },
            },
            enrichd::clock::Clock::new(),
        ))
        .expect("storage");
    let backend = rt.block_on(async {
        HttpCrm::new(HttpSettings {
            email_url: format!("http://{}/customers?email={{email}}", crm.addr),
            domain_url: Some(format!("http://{}/companies?domain={{domain}}", crm.addr)),
            headers: Vec::new(),
            fields: Vec::new(),
            timeout: Duration::from_secs(2),
            max_concurrency: 16,
        })
        .expect("http backend")
    });
    let source = Arc::new(CrmSource::new(
        "bench",
        Backend::Http(Box::new(backend)),
        CacheSettings {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(3600),
            max_capacity: 10_000_000,
            backend_timeout: Duration::from_secs(2),
            refresh_every: None,
        },
        storage.crm.clone(),
        rt.block_on(async { enrichd::clock::Clock::new() }),
    ));
    let deadline = || Instant::now() + Duration::from_secs(5);
    // Warm the cache for the hit case; check the miss path works.
    let warm = rt.block_on(source.lookup_email(SENDER, deadline()));
    assert_eq!(
        warm.map(|a| a.fields["claimNumber"].clone()).as_deref(),
        Some("CLM-9")
    );

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group(GROUP);
    group.bench_function("cached", |b| {
        b.to_async(&rt)
            .iter(|| source.lookup_email(SENDER, deadline()));
    });
    // Every iteration asks for a domain never seen: one backend round trip.
    let n = AtomicU64::new(0);
    group.bench_function("miss", |b| {
        b.to_async(&rt).iter(|| {
            let domain = format!("d{}.example", n.fetch_add(1, Ordering::Relaxed));
            let source = source.clone();
            async move { source.lookup_domain(&domain, deadline()).await }
        });
    });
    group.finish();
    c.final_summary();

    println!("\n== CRM lookup summary (medians of this run) ==");
    if let (Some(hit), Some(miss)) = (
        enrichd_tests::criterion_median_ns(GROUP, "cached"),
        enrichd_tests::criterion_median_ns(GROUP, "miss"),
    ) {
        println!(
            "cached lookup {hit:.0} ns; miss against the loopback REST CRM {:.1} µs -> a miss costs {:.0}x a hit",
            miss / 1e3,
            miss / hit
        );
    }
    println!(
        "backend calls made: {}",
        crm.email_calls() + crm.domain_calls()
    );
}
