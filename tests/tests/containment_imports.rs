//! Issue 9, host imports: what a plugin can make the host spend through
//! `log`, `kv` and `crm`, and components too large to ever instantiate.
//!
//! Each budget has an obeyed and a violated case against a real server,
//! real sled files and the real `hostile` plugin, and the resource it
//! protects (log bytes, data-dir bytes, RSS, backend calls) is measured
//! from outside and compared with its documented bound. Hostile plugins run
//! between two well-behaved ones (crm-enrich, keyword-router), whose actions
//! must still apply.
//!
//! The tests take turns ([`SERIAL`]): they measure the process's RSS, log
//! and `/healthz` latency, which tests running beside them would disturb.

use std::time::{Duration, Instant};

use enrichd::config::DEFAULT_SLED_CACHE_BYTES;
use enrichd::plugin::policy::{
    DEFAULT_CRM_LOOKUPS_PER_CALL, DEFAULT_KV_WRITE_BYTES_PER_CALL, DEFAULT_MAX_LOG_BYTES,
    DEFAULT_MAX_LOG_LINES, DEFAULT_MAX_MEMORY_BYTES,
};
use enrichd_tests::crm_server::FakeCrm;
use enrichd_tests::resources::{dir_bytes, healthz_worst_during, log_capture, rss_bytes};
use enrichd_tests::sandwich::{hostile, sandwich, seed_with_id, GOOD_AFTER, GOOD_BEFORE};
use enrichd_tests::{plugin_toml_as, start_error, TestServer};
use serde_json::{json, Value};

/// One test at a time in this binary (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `/healthz` must answer within this while hostile calls run (issue 9).
const HEALTHZ_BAR: Duration = Duration::from_millis(100);

/// Log bytes one logged guest line may add beyond its own text: timestamp,
/// level, target, `plugin=` and `delivery=` fields. The fmt layer's lines
/// are ~120 bytes plus the delivery id; 256 is a generous bound.
const LOG_LINE_OVERHEAD: usize = 256;

/// Deliver to `/<name>`; check the good plugins' actions applied and return
/// the hostile plugin's single `set-custom-fields` value.
async fn run(server: &TestServer, name: &str, id: &str) -> Value {
    let res = server.deliver(&format!("/{name}"), &seed_with_id(id)).await;
    assert_eq!(res.status, 200, "{name}");
    let body = res.json();
    assert_eq!(body["status"], "success", "{name}: {body}");
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.first().unwrap()["name"], GOOD_BEFORE, "{body}");
    assert_eq!(actions.last().unwrap()["name"], GOOD_AFTER, "{body}");
    // crm-enrich returns 2 actions, keyword-router 1; the hostile one 1.
    assert_eq!(actions.len(), 4, "{name}: {body}");
    actions[2]["value"].clone()
}

fn int(v: &Value, key: &str) -> u64 {
    v[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {v}"))
}

// --- log --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_budget_obeyed_and_violated_and_forged_lines_are_escaped() {
    let _turn = SERIAL.lock().await;
    let logs = log_capture();
    let server = TestServer::start(&sandwich(
        "",
        &[
            (
                "logfifty",
                hostile("logfifty", "log", &["log"], "", "lines = \"50\""),
            ),
            (
                "logloop",
                hostile(
                    "logloop",
                    "log",
                    &["log"],
                    "timeout_ms = 4000",
                    "ms = \"2000\"",
                ),
            ),
            (
                "logforge",
                hostile(
                    "logforge",
                    "log",
                    &["log"],
                    "",
                    "lines = \"1\"\ntext = \"hi\\n2026-12-01T06:00:00.000000Z  INFO enrichd::server: FORGED \\u001b[31mred\\r\"",
                ),
            ),
        ],
    ))
    .await;

    // Obeyed: 50 lines, all logged.
    let v = run(&server, "logfifty", "log-fifty").await;
    assert_eq!((int(&v, "logged"), int(&v, "refused")), (50, 0), "{v}");
    let lines = logs.lines_matching("logfifty");
    let guest = lines.iter().filter(|l| l.contains("line ")).count();
    assert_eq!(guest, 50, "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("guest log lines")),
        "{lines:#?}"
    );

    // Violated: a 2 s loop gets its budget, then over-limit, cheaply.
    let started = Instant::now();
    let v = run(&server, "logloop", "log-loop").await;
    let took = started.elapsed();
    assert_eq!(int(&v, "logged"), DEFAULT_MAX_LOG_LINES as u64, "{v}");
    assert!(int(&v, "refused") > 1000, "the loop ran on: {v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("over-limit:") && error.contains("max_log_lines = 100"),
        "{error}"
    );
    let bytes = logs.bytes_matching("logloop");
    let bound = DEFAULT_MAX_LOG_BYTES + (DEFAULT_MAX_LOG_LINES + 8) * LOG_LINE_OVERHEAD;
    println!(
        "log loop for 2 s: {} refused calls, {bytes} log bytes for the plugin (bound {bound}), answered in {took:?}",
        int(&v, "refused")
    );
    assert!(bytes < bound, "{bytes} log bytes, bound {bound}");
    let notes = logs.lines_matching("guest log lines");
    let notes: Vec<_> = notes.iter().filter(|l| l.contains("logloop")).collect();
    assert_eq!(notes.len(), 1, "exactly one dropped-lines note: {notes:#?}");
    assert!(
        notes[0].contains(&format!("{} guest log lines", int(&v, "refused"))),
        "{}",
        notes[0]
    );
    assert!(took < Duration::from_millis(4400), "{took:?}");

    // A forged line stays on its own line, escaped.
    let v = run(&server, "logforge", "log-forge").await;
    assert_eq!(int(&v, "logged"), 1, "{v}");
    let forged = logs.lines_matching("FORGED");
    assert_eq!(forged.len(), 1, "{forged:#?}");
    let line = &forged[0];
    assert!(line.contains("logforge"), "{line}");
    assert!(line.contains("hi\\n2026-12-01T06:00:00.000000Z"), "{line}");
    assert!(line.contains("\\u{1b}[31mred\\r"), "{line}");
    assert!(!line.chars().any(char::is_control), "{line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_output_shares_the_log_budget() {
    let _turn = SERIAL.lock().await;
    let logs = log_capture();
    let server = TestServer::start(&sandwich(
        "",
        &[
            (
                "printfew",
                hostile("printfew", "print", &[], "", "lines = \"10\""),
            ),
            (
                "printlots",
                hostile("printlots", "print", &[], "", "lines = \"20000\""),
            ),
        ],
    ))
    .await;
    let v = run(&server, "printfew", "print-few").await;
    assert_eq!(v["tags"], json!(["printed"]));
    let few = logs.lines_matching("printfew");
    assert_eq!(few.iter().filter(|l| l.contains("stream=")).count(), 20);

    let v = run(&server, "printlots", "print-lots").await;
    assert_eq!(v["tags"], json!(["printed"]));
    let lots = logs.lines_matching("printlots");
    let printed = lots.iter().filter(|l| l.contains("stream=")).count();
    assert!(printed <= DEFAULT_MAX_LOG_LINES, "{printed} lines");
    let notes = lots
        .iter()
        .filter(|l| l.contains("guest log lines"))
        .count();
    assert_eq!(notes, 1, "{lots:#?}");
    let bytes = logs.bytes_matching("printlots");
    let bound = DEFAULT_MAX_LOG_BYTES + (DEFAULT_MAX_LOG_LINES + 8) * LOG_LINE_OVERHEAD;
    println!("20 000 printed lines (twice): {printed} logged, {bytes} log bytes (bound {bound})");
    assert!(bytes < bound, "{bytes} log bytes, bound {bound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_log_loops_at_once_slow_neither_healthz_nor_the_other_plugins() {
    let _turn = SERIAL.lock().await;
    let logs = log_capture();
    let server = TestServer::start(&sandwich(
        "",
        &[(
            "logpair",
            hostile(
                "logpair",
                "log",
                &["log"],
                "timeout_ms = 3000",
                "ms = \"2000\"",
            ),
        )],
    ))
    .await;
    let timed = |id: &'static str| {
        let server = &server;
        async move {
            let started = Instant::now();
            let v = run(server, "logpair", id).await;
            (v, started.elapsed())
        }
    };
    let ((a, b), worst, probes) = healthz_worst_during(server.addr, async {
        tokio::join!(timed("log-pair-a"), timed("log-pair-b"))
    })
    .await;
    for (v, took) in [a, b] {
        assert_eq!(int(&v, "logged"), DEFAULT_MAX_LOG_LINES as u64, "{v}");
        assert!(took < Duration::from_millis(3300), "answered in {took:?}");
    }
    let bytes = logs.bytes_matching("logpair");
    let bound = 2 * (DEFAULT_MAX_LOG_BYTES + (DEFAULT_MAX_LOG_LINES + 8) * LOG_LINE_OVERHEAD);
    println!("two log loops: /healthz worst {worst:?} over {probes} probes; {bytes} log bytes (bound {bound})");
    assert!(bytes < bound, "{bytes} log bytes, bound {bound}");
    assert!(worst < HEALTHZ_BAR, "/healthz took {worst:?}");
}

// --- kv ---------------------------------------------------------------------

/// Data-dir growth allowed for five kv-filling calls: each may write
/// `kv_write_bytes_per_call` (1 MiB); sled's log-structured files hold a few
/// copies of rewritten data until they are compacted, and the delivery
/// store adds a little per delivery. 16 MiB for 5 MiB written.
const KV_DIR_BOUND: u64 = 16 << 20;
/// RSS growth allowed for five kv-filling calls: sled's page cache is
/// bounded by `sled_cache_bytes` (64 MiB) and instances are freed after each
/// call; the rest is allocator slack. (Before the bound: +4.2 GiB.)
const KV_RSS_BOUND: u64 = DEFAULT_SLED_CACHE_BYTES + (32 << 20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_fill_stops_at_the_per_call_budget_and_the_host_stays_small() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::start(&sandwich(
        "",
        &[(
            "kvfill",
            hostile("kvfill", "kv-fill", &["kv"], "timeout_ms = 6000", ""),
        )],
    ))
    .await;
    let data = server.dir().join("data");
    let (dir_before, rss_before) = (dir_bytes(&data), rss_bytes());

    let timed = |id: String| {
        let server = &server;
        async move {
            let started = Instant::now();
            let v = run(server, "kvfill", &id).await;
            (v, started.elapsed())
        }
    };
    // Two at once, under the /healthz probe, then three more.
    let ((a, b), worst, probes) = healthz_worst_during(server.addr, async {
        tokio::join!(timed("kv-fill-0".into()), timed("kv-fill-1".into()))
    })
    .await;
    let mut results = vec![a, b];
    for i in 2..5 {
        results.push(timed(format!("kv-fill-{i}")).await);
    }
    let per_value = 65536 + "fill-00".len() as u64;
    for (v, took) in &results {
        let written = int(v, "written");
        assert_eq!(
            written,
            DEFAULT_KV_WRITE_BYTES_PER_CALL as u64 / per_value,
            "{v}"
        );
        let error = v["error"].as_str().unwrap();
        assert!(
            error.starts_with("over-limit:") && error.contains("kv_write_bytes_per_call = 1048576"),
            "{error}"
        );
        assert!(*took < Duration::from_millis(6600), "answered in {took:?}");
    }
    // Let sled's background flush (every 500 ms) write what it holds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (dir_grew, rss_grew) = (
        dir_bytes(&data).saturating_sub(dir_before),
        rss_bytes().saturating_sub(rss_before),
    );
    println!(
        "five kv fills: data dir +{} KiB (bound {} KiB), RSS +{} KiB (bound {} KiB), /healthz worst {worst:?} over {probes} probes",
        dir_grew >> 10,
        KV_DIR_BOUND >> 10,
        rss_grew >> 10,
        KV_RSS_BOUND >> 10
    );
    assert!(dir_grew < KV_DIR_BOUND, "data dir grew {dir_grew} bytes");
    assert!(rss_grew < KV_RSS_BOUND, "RSS grew {rss_grew} bytes");
    assert!(worst < HEALTHZ_BAR, "/healthz took {worst:?}");
    // The stored record names the budget the call ran into; the good
    // plugins around it ran into none.
    let record = server.admin_get("/deliveries/kv-fill-0").await.json();
    let plugins = record["record"]["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("no plugins in {record}"));
    let hits: Vec<(&str, &Value)> = plugins
        .iter()
        .map(|p| (p["plugin"].as_str().unwrap(), &p["limits_hit"]))
        .collect();
    assert_eq!(
        hits,
        [
            ("crm-enrich", &Value::Null),
            ("kvfill", &serde_json::json!(["kv_write_bytes_per_call"])),
            ("keyword-router", &Value::Null),
        ],
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_namespace_quotas_and_operation_budget_obeyed_and_violated() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::start(&sandwich(
        "",
        &[
            (
                "kvkeys",
                hostile(
                    "kvkeys",
                    "kv-fill",
                    &["kv"],
                    "kv_max_keys = 5",
                    "count = \"3\"\nvalue_len = \"10\"",
                ),
            ),
            (
                "kvbytes",
                hostile(
                    "kvbytes",
                    "kv-fill",
                    &["kv"],
                    "kv_max_bytes = 1000",
                    "count = \"50\"\nvalue_len = \"100\"",
                ),
            ),
            (
                "kvops",
                hostile(
                    "kvops",
                    "kv-fill",
                    &["kv"],
                    "kv_ops_per_call = 7",
                    "count = \"50\"\nvalue_len = \"1\"",
                ),
            ),
        ],
    ))
    .await;
    let kv = server.app.services().kv.clone().unwrap();
    let quota = enrichd::storage::Quota {
        max_keys: 5,
        max_bytes: u64::MAX,
    };

    // Obeyed: three keys in an empty namespace.
    let v = run(&server, "kvkeys", "kv-keys-0").await;
    assert_eq!((int(&v, "written"), v["error"].as_str()), (3, Some("")));
    // Full: the other two keys taken, a new key is over the quota…
    kv.set_within("kvkeys", "other-0", "x", quota)
        .await
        .unwrap();
    kv.set_within("kvkeys", "other-1", "x", quota)
        .await
        .unwrap();
    kv.delete("kvkeys", "fill-2").await.unwrap();
    kv.set_within("kvkeys", "other-2", "x", quota)
        .await
        .unwrap();
    let v = run(&server, "kvkeys", "kv-keys-1").await;
    assert_eq!(
        int(&v, "written"),
        2,
        "fill-0 and fill-1 are overwritten: {v}"
    );
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("over-limit:") && error.contains("kv_max_keys = 5"),
        "{error}"
    );
    // … and after a delete the plugin can write again.
    kv.delete("kvkeys", "other-2").await.unwrap();
    let v = run(&server, "kvkeys", "kv-keys-2").await;
    assert_eq!((int(&v, "written"), v["error"].as_str()), (3, Some("")));
    assert_eq!(kv.usage("kvkeys").await.unwrap().keys, 5);

    // Bytes: 106 bytes per entry, 1000 allowed.
    let v = run(&server, "kvbytes", "kv-bytes-0").await;
    assert_eq!(int(&v, "written"), 9, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("over-limit:") && error.contains("kv_max_bytes = 1000"),
        "{error}"
    );
    assert!(kv.usage("kvbytes").await.unwrap().bytes <= 1000);

    // Operations per call: 7, each set is one.
    let v = run(&server, "kvops", "kv-ops-0").await;
    assert_eq!(int(&v, "written"), 7, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("over-limit:") && error.contains("kv_ops_per_call = 7"),
        "{error}"
    );
    // The budget is per call: the next call gets its own.
    let v = run(&server, "kvops", "kv-ops-1").await;
    assert_eq!(int(&v, "written"), 7, "{v}");

    // The same store keeps answering deliveries (run() checked each one).
    let res = server.deliver("/kvkeys", &seed_with_id("kv-keys-0")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-enrichd-replay"), Some("true"));
}

// --- crm --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_lookups_per_call_obeyed_and_violated_with_bounded_backend_calls() {
    let _turn = SERIAL.lock().await;
    let logs = log_capture();
    let crm = FakeCrm::start().await;
    let config = format!(
        "{}{}{}[[route]]\npath = \"/crmflood\"\nchain = [{{ plugin = \"crmflood\" }}]\n\
         [[route]]\npath = \"/crmfew\"\nchain = [{{ plugin = \"crmfew\" }}]\n",
        crm.source_toml("", ""),
        hostile("crmflood", "crm-flood", &["crm"], "timeout_ms = 60000", ""),
        hostile("crmfew", "crm-flood", &["crm"], "", "count = \"5\""),
    );
    let server = TestServer::start(&config).await;
    let value = |body: &Value| body["actions"][0]["value"].clone();

    // Obeyed: five lookups, all answered (not found), two backend calls each.
    let body = server
        .deliver("/crmfew", &seed_with_id("crm-few"))
        .await
        .json();
    let v = value(&body);
    assert_eq!((int(&v, "ok"), int(&v, "failed")), (5, 0), "{body}");
    assert_eq!(crm.email_calls() + crm.domain_calls(), 10);

    // Violated: 200 000 distinct addresses.
    let started = Instant::now();
    let body = server
        .deliver("/crmflood", &seed_with_id("crm-flood"))
        .await
        .json();
    let v = value(&body);
    let cap = DEFAULT_CRM_LOOKUPS_PER_CALL as u64;
    assert_eq!(int(&v, "ok"), cap, "{body}");
    assert_eq!(int(&v, "failed"), 200_000 - cap, "{body}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("over-limit:") && error.contains("crm_lookups_per_call = 20"),
        "{error}"
    );
    // Documented bound: 2 backend calls (address, then domain) per lookup
    // per granted source. (The first five addresses are the ones `crmfew`
    // looked up: cached, so fewer calls.)
    let calls = crm.email_calls() + crm.domain_calls() - 10;
    println!(
        "200 000 CRM lookups: {calls} backend calls (bound {}), answered in {:?}",
        2 * cap,
        started.elapsed()
    );
    assert!(calls <= 2 * cap, "{calls} backend calls");
    // The host's log names the budget the plugin ran into, once.
    let notes = logs.lines_matching("import budgets used up");
    let notes: Vec<_> = notes.iter().filter(|l| l.contains("crmflood")).collect();
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains("crm_lookups_per_call"), "{}", notes[0]);
}

// --- components too large to instantiate -------------------------------------

fn single(plugin: &str, wasm: &str, extra: &str, allocator: &str) -> String {
    format!(
        "allocator = {allocator:?}\n{}[[route]]\npath = \"/hook\"\nchain = [{{ plugin = {plugin:?} }}]\n",
        plugin_toml_as(plugin, wasm, &[], extra)
    )
}

#[tokio::test]
async fn components_declaring_too_much_memory_or_table_are_refused_at_start_under_every_allocator()
{
    let _turn = SERIAL.lock().await;
    for allocator in ["auto", "pooling", "on-demand"] {
        let err = start_error(single("fatmem", "fat-memory", "", allocator))
            .await
            .unwrap_or_else(|| panic!("{allocator}: a 80 MiB memory was accepted"));
        println!("{allocator}: {err}");
        assert!(err.contains("plugin \"fatmem\""), "{allocator}: {err}");
        let needs: u64 = err
            .split("needs a linear memory of ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{allocator}: no size in {err}"));
        assert!(needs >= 80 << 20, "{allocator}: {err}");
        assert!(
            err.contains(&format!("max_memory_bytes = {DEFAULT_MAX_MEMORY_BYTES}")),
            "{allocator}: {err}"
        );

        // The check is per plugin: another plugin's larger limit (which
        // sizes the pooling allocator's slots) does not let this one in.
        let beside_roomy = format!(
            "{}{}",
            single("fatmem", "fat-memory", "", allocator),
            plugin_toml_as("roomy", "echo", &[], "max_memory_bytes = 134217728")
        );
        let err = start_error(beside_roomy)
            .await
            .unwrap_or_else(|| panic!("{allocator}: accepted beside a roomy plugin"));
        assert!(err.contains("plugin \"fatmem\""), "{allocator}: {err}");

        // Obeyed: with 128 MiB it starts and runs.
        let roomy = single(
            "fatmem",
            "fat-memory",
            "max_memory_bytes = 134217728",
            allocator,
        );
        assert_eq!(start_error(roomy.clone()).await, None, "{allocator}");
        let server = TestServer::start(&roomy).await;
        let res = server.deliver("/hook", &seed_with_id("fat")).await;
        let body = res.json();
        assert_eq!(body["status"], "success", "{allocator}: {body}");
        assert!(
            !body["message"].as_str().unwrap_or("").contains("failed"),
            "{allocator}: {body}"
        );
        drop(server);

        // Tables: a normal plugin needs more than 1 element.
        let err = start_error(single("tiny", "echo", "max_table_elements = 1", allocator))
            .await
            .unwrap_or_else(|| panic!("{allocator}: a table was accepted"));
        assert!(err.contains("plugin \"tiny\""), "{allocator}: {err}");
        assert!(
            err.contains("needs a table of") && err.contains("max_table_elements = 1;"),
            "{allocator}: {err}"
        );
    }
}
