//! Issue 17: the embedded store's memory is bounded by its configured cache,
//! not by how much it holds.
//!
//! `fill-store` (tests/src/bin/fill-store.rs) runs as its own process, so
//! the resident memory it reports is the storage's (plus a small runtime),
//! not this test harness's: it writes deliveries through the answers port
//! and plugin kv values through the kv port, far more than the sled cache,
//! on real sled files in a temp dir.

use std::path::Path;
use std::process::Command;

use enrichd::clock::Clock;
use enrichd::storage::{self, DeliveryKey, StoredDelivery};

/// sled's page cache for the memory test: 8 MiB, far below what is written.
const CACHE_BYTES: u64 = 8 << 20;
/// Deliveries written: 20 000 copies of the example chain's answer (~1.6 KB
/// of JSON each, ~32 MB, before the codec compacts them; ~26 MB on disk).
const DELIVERIES: u64 = 20_000;
/// Plugin kv data written on top: 128 MiB, so the data written is well
/// over 20x the cache (~290 MB on disk in all).
const KV_BYTES: u64 = 128 << 20;
/// Writes in flight: a few, as concurrent deliveries write. Each thread of
/// tokio's blocking pool that runs sled work keeps allocator caches and
/// sled's per-thread garbage: with the same cache and data, 64 in flight
/// peaked at ~300 MiB where 4 peaked at ~125 MiB.
const CONCURRENCY: u64 = 4;
/// What the process may hold beyond the cache: 144 MiB. Measured (debug
/// build, jemalloc as in the enrichd binary, 2 cores): the process alone
/// (tokio runtime, debug binary) ~33 MiB at an empty store; with the data
/// above its peak is 119-126 MiB at an 8 MiB cache and 175 MiB at a 64 MiB
/// one, so ~115 MiB is not the cache: sled's cache counts pages by their
/// on-disk size, not by what they take in memory, sled keeps bookkeeping
/// per page and write buffers outside it, and jemalloc returns freed pages
/// only after its decay (seconds). That part does not grow with the data:
/// 256 MiB of kv instead of 128 peaked at 119 MiB. The rest is headroom.
/// With sled's default 1 GiB cache the same fill peaks at ~296 MiB, so this
/// bound fails when the cache is not capped.
const MARGIN_BYTES: u64 = 144 << 20;

/// The template: a stored delivery of the example chain as `enrichd
/// deliveries show` prints it (the answer is re-serialized by fill-store).
const SHOWN_TEMPLATE: &str = r#"{"answer":{"actions":[{"name":"Apply CRM context","type":"setCustomFields","value":{"claimNumber":"CLM-556677","policyNumber":"POL-889900","region":"EMEA"}},{"name":"Tag VIP customers","type":"tag","value":{"tags":["VIP"]}},{"name":"Route by keyword \"coverage\"","type":"assign","value":{"backupAssignments":[{"assignToAnyUser":true}],"mainAssignment":{"ignoreMaxMessages":true,"users":["Policy Desk"]}}}],"message":"3 actions from crm-enrich (2), keyword-router (1)","status":"success"},"httpStatus":200,"id":"ex-1-28896-17773-1-21988","record":{"answeredAtMs":1796123218786,"conversationId":"2L8WYB89Z","delivery":"ex-1-28896-17773-1-21988","elapsedMs":10,"httpStatus":200,"mailbox":"info@pinnilly.com","message":"3 actions from crm-enrich (2), keyword-router (1)","plugins":[{"actions":[{"name":"Apply CRM context","type":"setCustomFields","value":{"claimNumber":"CLM-556677","policyNumber":"POL-889900","region":"EMEA"}},{"name":"Tag VIP customers","type":"tag","value":{"tags":["VIP"]}}],"dropped":[],"elapsed_us":384,"message":"enriched from CRM record for rstorrie@pinnilly.com","notes":[],"outcome":"applied","plugin":"crm-enrich"},{"actions":[],"dropped":[],"elapsed_us":5655,"message":"no engagement recorded for rstorrie@pinnilly.com","notes":[],"outcome":"applied","plugin":"engagement-enrich"},{"actions":[{"name":"Route by keyword \"coverage\"","type":"assign","value":{"backupAssignments":[{"assignToAnyUser":true}],"mainAssignment":{"ignoreMaxMessages":true,"users":["Policy Desk"]}}}],"dropped":[],"elapsed_us":885,"message":"routed by keyword \"coverage\" to Policy Desk","notes":[],"outcome":"applied","plugin":"keyword-router"}],"route":"/emailgistics-webhook","status":"success","subject":"Coverage"},"route":"/emailgistics-webhook","storedAt":"2026-12-01T11:06:58Z"}"#;

/// What `fill-store` reported.
#[derive(Debug)]
struct Filled {
    records: u64,
    peak_bytes: u64,
    rss_bytes: u64,
}

/// Run `fill-store` on `data_dir` with `template` and the extra arguments;
/// parse its `FILLED` line.
fn fill(data_dir: &Path, template: &Path, args: &[&str]) -> Filled {
    let out = Command::new(env!("CARGO_BIN_EXE_fill-store"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--template")
        .arg(template)
        .args(args)
        .output()
        .expect("run fill-store");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fill-store failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FILLED "))
        .unwrap_or_else(|| panic!("no FILLED line in {stdout:?}"))
        .split_whitespace()
        .map(|f| f.parse::<f64>().expect("a number") as u64)
        .collect();
    let [records, _seconds, peak_kb, rss_kb] = fields[..] else {
        panic!("FILLED wants 4 fields: {stdout:?}");
    };
    Filled {
        records,
        peak_bytes: peak_kb * 1024,
        rss_bytes: rss_kb * 1024,
    }
}

const MIB: u64 = 1 << 20;

#[test]
fn issue_17_rss_stays_within_the_sled_cache_plus_a_margin_while_writing_20x_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.json");
    std::fs::write(&template, SHOWN_TEMPLATE).unwrap();
    let data_dir = dir.path().join("data");
    let filled = fill(
        &data_dir,
        &template,
        &[
            "--count",
            &DELIVERIES.to_string(),
            "--kv-bytes",
            &KV_BYTES.to_string(),
            "--cache-bytes",
            &CACHE_BYTES.to_string(),
            "--concurrency",
            &CONCURRENCY.to_string(),
        ],
    );
    let on_disk = dir_bytes(&data_dir);
    eprintln!(
        "fill-store: {} deliveries + {} MiB kv, cache {} MiB: peak RSS {} MiB, RSS {} MiB, {} MiB on disk",
        filled.records,
        KV_BYTES / MIB,
        CACHE_BYTES / MIB,
        filled.peak_bytes / MIB,
        filled.rss_bytes / MIB,
        on_disk / MIB
    );
    assert_eq!(filled.records, DELIVERIES);
    // The data really went past the cache: on disk it is many times it.
    assert!(
        on_disk > 20 * CACHE_BYTES,
        "only {on_disk} bytes on disk: the fill did not write past the cache"
    );
    assert_within_bound("filling", filled.peak_bytes);

    // Opening the full store (which counts its records) stays within the
    // bound too.
    let reopened = fill(
        &data_dir,
        &template,
        &["--count", "0", "--cache-bytes", &CACHE_BYTES.to_string()],
    );
    eprintln!(
        "fill-store: reopened, peak RSS {} MiB",
        reopened.peak_bytes / MIB
    );
    assert_eq!(reopened.records, DELIVERIES);
    assert_within_bound("reopening", reopened.peak_bytes);
}

/// The bound of the memory test: the cache plus the measured margin.
fn assert_within_bound(what: &str, peak_bytes: u64) {
    assert!(
        peak_bytes <= CACHE_BYTES + MARGIN_BYTES,
        "{what}: peak RSS {} MiB > cache {} MiB + margin {} MiB",
        peak_bytes / MIB,
        CACHE_BYTES / MIB,
        MARGIN_BYTES / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_filled_deliveries_survive_on_disk_and_read_back_as_the_template() {
    const COUNT: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    // The other template shape: a stored delivery as GET /deliveries/ID
    // answers it; its body is kept byte for byte.
    let template = StoredDelivery {
        route: "/emailgistics-webhook".into(),
        id: "template".into(),
        stored_at_ms: 1,
        status: 200,
        body: r#"{"status": "success", "actions": []}"#.into(),
        record: serde_json::json!({ "delivery": "template", "message": "no actions" }),
    };
    let template_path = dir.path().join("template.json");
    std::fs::write(&template_path, serde_json::to_vec(&template).unwrap()).unwrap();
    let data_dir = dir.path().join("data");
    let args = [
        "--count",
        "1000",
        "--route",
        "/other",
        "--cache-bytes",
        "2097152",
    ];
    let first = fill(&data_dir, &template_path, &args);
    assert_eq!(first.records, 1_000);
    // A second run adds to the first (new run id, same directory).
    let second = fill(&data_dir, &template_path, &args);
    assert_eq!(second.records, COUNT);

    // fill-store has exited: its data directory opens again, as enrichd
    // would open it, and holds every delivery, live.
    let storage = storage::open(
        &storage::Settings {
            backend: storage::Backend::Sled(storage::SledSettings {
                data_dir: data_dir.clone(),
                flush: storage::FlushPolicy::Always,
                flush_every_ms: 500,
                cache_bytes: 2 << 20,
            }),
            limits: storage::Limits {
                retention: storage::answers::DEFAULT_RETENTION,
                max_records: storage::answers::DEFAULT_MAX_RECORDS,
                dedupe_window: storage::events::DEFAULT_DEDUPE_WINDOW,
                max_queued: 10,
            },
        },
        Clock::new(),
    )
    .await
    .expect("reopen the filled data dir");
    assert_eq!(storage.answers.len().await.unwrap() as u64, COUNT);
    let listed = storage.answers.list(0, 10_000).await.unwrap();
    assert_eq!(listed.len() as u64, COUNT, "every delivery is live");
    let newest = &listed[0];
    assert!(newest.id.starts_with("fill-"), "{newest:?}");
    assert_eq!(newest.route, "/other");
    let stored = storage
        .answers
        .get(&DeliveryKey::new("/other", &newest.id))
        .await
        .unwrap()
        .expect("the listed delivery reads back");
    assert_eq!(
        stored.body, template.body,
        "the body is the template's, byte for byte"
    );
    assert_eq!(stored.status, 200);
    assert_eq!(stored.record["delivery"], newest.id.as_str());
    assert_eq!(stored.record["message"], "no actions");
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}
