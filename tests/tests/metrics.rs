//! Issue 14, metrics: `GET /metrics` on the admin listener is a Prometheus
//! text exposition a real parser reads; after real deliveries (one action
//! dropped by validation, one plugin trapping), a replayed copy and an
//! EngageLab callback, the counters and histograms have moved, every label
//! value is bounded (no delivery id, mailbox or address), and every metric
//! the Grafana dashboard queries is there.

use std::collections::BTreeSet;

use enrichd_tests::process::engagelab_example;
use enrichd_tests::{crm_sample, plugin_toml, seed_payload, signed_callback, TestServer, SECRET};
use prometheus_parse::{Sample, Scrape, Value};

const ROUTE: &str = "/emailgistics-webhook";
const EVENTS: &str = "/engagelab-webhook";
const APP_KEY: &str = "metrics-test-app-key";

fn config() -> String {
    format!(
        "[[crm]]\nname = \"main\"\nkind = \"embedded\"\nseed = {crm:?}\n{}{}{}{}\
         [[route]]\npath = \"{ROUTE}\"\nsecrets = [{{ value = \"{SECRET}\" }}]\n\
         chain = [{{ plugin = \"crm-enrich\" }}, {{ plugin = \"every-action\" }}, {{ plugin = \"trap\" }}]\n\
         [[engagelab]]\npath = \"{EVENTS}\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\n\
         chain = [{{ plugin = \"event-echo\" }}]\n",
        plugin_toml("crm-enrich", &["log", "config", "crm"], ""),
        plugin_toml("every-action", &[], ""),
        plugin_toml("trap", &[], ""),
        plugin_toml("event-echo", &["kv"], ""),
        crm = crm_sample(),
    )
}

async fn callback(server: &TestServer) -> u16 {
    signed_callback(server.addr, EVENTS, APP_KEY, &engagelab_example("open"))
        .await
        .status
}

/// Scrape `/metrics`: the raw text and what the parser made of it.
async fn scrape(server: &TestServer) -> (String, Scrape) {
    let res = server.admin_get("/metrics").await;
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8(res.body).expect("UTF-8");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = Scrape::parse(lines).expect("a valid text exposition");
    (text, parsed)
}

/// The value of the sample named `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(!found.is_empty(), "no {name} with {labels:?}");
    found
        .iter()
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("{name} is a summary, not a histogram"),
        })
        .sum()
}

/// Every metric name the exposition lists (histograms as `_bucket`,
/// `_sum`, `_count`).
fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn issue_14_metrics_move_with_deliveries_and_labels_stay_bounded() {
    let server = TestServer::start(&config()).await;
    let payload = seed_payload();
    let first = server.deliver(ROUTE, &payload).await;
    assert_eq!(first.status, 200);
    let copy = server.deliver(ROUTE, &payload).await;
    assert_eq!(copy.header("x-enrichd-replay"), Some("true"));
    assert_eq!(callback(&server).await, 200);
    let forged = signed_callback(server.addr, EVENTS, "not-the-app-key", "{}").await;
    assert_eq!(forged.status, 401);
    server.drained().await;

    let (text, scrape) = scrape(&server).await;
    let route = [("route", ROUTE)];
    let ok = [
        ("route", ROUTE),
        ("http_status", "200"),
        ("status", "success"),
    ];
    assert_eq!(value(&scrape, "enrichd_deliveries_total", &ok), 1.0);
    assert_eq!(
        value(&scrape, "enrichd_delivery_replays_total", &route),
        1.0
    );
    assert_eq!(
        value(&scrape, "enrichd_delivery_duration_seconds", &route),
        1.0
    );
    let applied = [("plugin", "every-action"), ("outcome", "applied")];
    assert_eq!(value(&scrape, "enrichd_plugin_calls_total", &applied), 1.0);
    let trapped = [("plugin", "trap"), ("kind", "trap")];
    assert_eq!(
        value(&scrape, "enrichd_plugin_failures_total", &trapped),
        1.0
    );
    let plugin = [("plugin", "crm-enrich")];
    assert_eq!(
        value(&scrape, "enrichd_plugin_call_duration_seconds", &plugin),
        1.0
    );
    assert!(value(&scrape, "enrichd_plugin_peak_memory_bytes", &plugin) >= 1.0);
    let lookups = [("plugin", "crm-enrich"), ("import", "crm.lookup-email")];
    assert!(value(&scrape, "enrichd_plugin_host_calls_total", &lookups) >= 1.0);
    let dropped = [("plugin", "every-action")];
    assert_eq!(
        value(&scrape, "enrichd_actions_dropped_total", &dropped),
        3.0
    );
    assert_eq!(
        value(
            &scrape,
            "enrichd_plugin_breaker_state",
            &[("plugin", "trap")]
        ),
        0.0
    );
    assert!(
        value(&scrape, "enrichd_crm_hits_total", &[("source", "main")])
            + value(&scrape, "enrichd_crm_misses_total", &[("source", "main")])
            >= 1.0
    );
    assert_eq!(value(&scrape, "enrichd_engagelab_received_total", &[]), 1.0);
    let refused = |reason| {
        value(
            &scrape,
            "enrichd_engagelab_refused_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refused("unauthorized"), 1.0);
    assert_eq!(refused("bad_request"), 0.0);
    assert_eq!(
        value(&scrape, "enrichd_engagelab_processed_total", &[]),
        1.0
    );
    assert_eq!(value(&scrape, "enrichd_engagelab_queue_depth", &[]), 0.0);
    assert_eq!(
        value(&scrape, "enrichd_engagelab_queue_head_age_seconds", &[]),
        0.0
    );
    assert_eq!(value(&scrape, "enrichd_store_deliveries", &[]), 1.0);
    // Every CRM backend call is timed once.
    let source = [("source", "main")];
    let backend_calls = value(&scrape, "enrichd_crm_backend_calls_total", &source);
    assert!(backend_calls >= 1.0);
    assert_eq!(
        value(&scrape, "enrichd_crm_backend_duration_seconds", &source),
        backend_calls
    );
    // event-echo stored the callback and its count in its namespace; the
    // plugins without `kv` have no series.
    let echo = [("namespace", "event-echo")];
    assert_eq!(value(&scrape, "enrichd_kv_keys", &echo), 2.0);
    assert!(value(&scrape, "enrichd_kv_bytes", &echo) > 20.0);
    assert!(
        !text.contains("enrichd_kv_bytes{namespace=\"crm-enrich\"}"),
        "{text}"
    );

    // Bounded labels: nothing from the payload, no address, no long id.
    let secret_values = [
        payload["id"].as_str().unwrap(),
        payload["mailbox"].as_str().unwrap_or("mailbox"),
    ];
    for sample in &scrape.samples {
        for (key, v) in sample.labels.iter() {
            assert!(
                !v.contains('@'),
                "{}: label {key}={v} looks like an address",
                sample.metric
            );
            assert!(v.len() <= 64, "{}: label {key}={v} is long", sample.metric);
            assert!(
                !secret_values.contains(&v.as_str()),
                "{}: {key}={v} is payload data",
                sample.metric
            );
            let digits = v.chars().filter(char::is_ascii_digit).count();
            assert!(
                key == "le" || key == "http_status" || digits < 6,
                "{}: {key}={v} looks like an id",
                sample.metric
            );
        }
    }

    // The dashboard queries only metrics the exposition has.
    let dashboard = std::fs::read_to_string(format!(
        "{}/../deploy/grafana/enrichd.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let exposed = names(&text);
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("enrichd_") {
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 4, "{queried:?}");
    let missing: Vec<_> = queried.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not in /metrics"
    );
}

#[tokio::test]
async fn issue_14_each_server_counts_only_its_own_deliveries() {
    let config = config();
    let (a, b) = tokio::join!(TestServer::start(&config), TestServer::start(&config));
    assert_eq!(a.deliver(ROUTE, &seed_payload()).await.status, 200);
    let (_, on_a) = scrape(&a).await;
    let (text_b, _) = scrape(&b).await;
    let ok = [
        ("route", ROUTE),
        ("http_status", "200"),
        ("status", "success"),
    ];
    assert_eq!(value(&on_a, "enrichd_deliveries_total", &ok), 1.0);
    assert!(!text_b.contains("enrichd_deliveries_total{"), "{text_b}");
}
