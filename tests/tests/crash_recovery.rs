//! kill -9 of the real `enrichd` binary on the embedded (sled) backend,
//! then a restart on the same data directory (issues 4, 6 and 10):
//!
//! - under load, every delivery answered before the kill is replayed byte
//!   for byte after it, its own answer (each names its delivery and its
//!   run), not another's;
//! - a delivery whose plugins were running at the kill runs again when the
//!   sender retries, and is answered;
//! - a callback being processed at the kill is processed after the restart.
//!
//! Runs are read from outside the host: its `/stats` and the lines the
//! `hostile` plugin in `count` mode logs per run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use enrichd_tests::process::{engagelab_example, eventually, Host};
use enrichd_tests::sandwich::seed_with_id;
use enrichd_tests::{enrichd_bin, plugin_toml, plugin_toml_as, post_request, try_raw_request};
use serde_json::json;

const REPLAY: &str = "x-enrichd-replay";

/// The delivery counter: records its run, then spins `ms`.
fn counter(name: &str, ms: u64) -> String {
    plugin_toml_as(
        name,
        "hostile",
        &["config", "kv", "log"],
        &format!(
            "timeout_ms = {}\n[plugin.config]\nmode = \"count\"\nms = \"{ms}\"",
            ms + 5000
        ),
    )
}

/// `/hook`: `echo` (the answer names the delivery) then a counter that
/// does not spin (the answer names the run), so no two deliveries and no
/// two runs are answered alike.
fn hook() -> String {
    format!(
        "{}{}[[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"echo\" }}, {{ plugin = \"counter\" }}]\n",
        plugin_toml("echo", &[], ""),
        counter("counter", 0)
    )
}

/// POST a new delivery with this id to [`hook`]: whether it was replayed,
/// and the body; `None` when the host is gone.
///
/// # Panics
/// When the answer is not that delivery's (echo's `id`).
async fn deliver(host: std::net::SocketAddr, id: &str) -> Option<(bool, Vec<u8>)> {
    let body = seed_with_id(id).to_string();
    let res = try_raw_request(host, &post_request(host, "/hook", &[], body.as_bytes()))
        .await
        .ok()?;
    if res.status != 200 {
        return None;
    }
    let answer = res.json();
    assert_eq!(answer["actions"][0]["value"]["id"], id, "{answer}");
    Some((res.header(REPLAY).is_some(), res.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_then_every_answered_delivery_is_replayed() {
    const ROUNDS: usize = 4;
    const CLIENTS: usize = 8;
    // How long load runs before each kill.
    const LOAD_FOR: Duration = Duration::from_millis(400);
    // The answers differ per delivery and per run: a replay that served
    // another delivery's answer, or ran the chain again, shows.
    let mut host = Host::start(enrichd_bin!(), "sled", &hook()).await;
    let mut answered: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for round in 0..=ROUNDS {
        if round > 0 {
            host.restart().await;
        }
        // Everything answered in earlier rounds, before their kills, replays.
        for (id, body) in &answered {
            let (replayed, again) = deliver(host.addr, id)
                .await
                .expect("answered after restart");
            assert!(replayed, "round {round}: {id} was not replayed");
            assert_eq!(&again, body, "round {round}: {id} changed");
        }
        if round == ROUNDS {
            break; // the last restart only checks the last round's answers
        }
        let stop_at = Instant::now() + LOAD_FOR;
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..CLIENTS {
            let addr = host.addr;
            clients.spawn(async move {
                let mut got = Vec::new();
                for n in 0.. {
                    let id = format!("r{round}-c{c}-n{n}");
                    match deliver(addr, &id).await {
                        Some((false, body)) => got.push((id, body)),
                        Some((true, _)) => panic!("{id} is new, yet was replayed"),
                        None => break,
                    }
                    if Instant::now() > stop_at + Duration::from_secs(5) {
                        break;
                    }
                }
                got
            });
        }
        tokio::time::sleep(LOAD_FOR).await;
        host.kill();
        let before = answered.len();
        for got in clients.join_all().await {
            answered.extend(got);
        }
        assert!(
            answered.len() > before,
            "round {round}: no delivery was answered under load"
        );
    }
    println!(
        "{} deliveries answered across {ROUNDS} kill -9 rounds, all replayed",
        answered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_then_the_retry_after_restart_runs_and_answers() {
    let config = format!(
        "{}[[route]]\npath = \"/slow\"\nchain = [{{ plugin = \"counter\" }}]\n",
        counter("counter", 3000)
    );
    let mut host = Host::start(enrichd_bin!(), "sled", &config).await;
    let payload = seed_with_id("killed-mid-delivery");
    let first = {
        let (addr, body) = (host.addr, payload.to_string());
        tokio::spawn(async move {
            try_raw_request(addr, &post_request(addr, "/slow", &[], body.as_bytes())).await
        })
    };
    let h = &host;
    let killed = eventually(
        "the plugin runs",
        Duration::from_secs(30),
        move || async move { h.logged_runs("counter", true).pop() },
    )
    .await;
    host.kill();
    assert!(first.await.expect("task").is_err(), "nothing was answered");

    host.restart().await;
    let retry = host.deliver("/slow", &payload).await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.header(REPLAY), None, "the retry ran the plugins");
    let run = retry.json()["actions"][0]["value"]["run"].clone();
    assert_ne!(run, json!(killed), "a new run");
    assert_eq!(
        host.logged_runs("counter", true),
        vec![run.as_str().unwrap().to_owned()]
    );
    let again = host.deliver("/slow", &payload).await;
    assert_eq!(again.header(REPLAY), Some("true"));
    assert_eq!(again.body, retry.body);
    assert_eq!(
        host.plugin_calls("counter").await,
        1,
        "run once after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_being_processed_at_kill_9_is_processed_after_restart() {
    const APP_KEY: &str = "crash-recovery-app-key";
    let config = format!(
        "{}{}{}\
         [[engagelab]]\npath = \"/events\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\n\
         chain = [{{ plugin = \"event-counter\" }}, {{ plugin = \"engagement-tracker\" }}]\n\
         [[route]]\npath = \"/enrich\"\nchain = [{{ plugin = \"engagement-enrich\" }}]\n",
        counter("event-counter", 3000),
        plugin_toml("engagement-tracker", &["kv", "log"], ""),
        plugin_toml(
            "engagement-enrich",
            &["kv", "config"],
            "kv_read = [\"engagement-tracker\"]\n[plugin.config]\nsoft-bounce-threshold = \"1\""
        ),
    );
    let mut host = Host::start(enrichd_bin!(), "sled", &config).await;
    let res = host
        .callback("/events", APP_KEY, &engagelab_example("soft_bounce"))
        .await
        .expect("answered");
    assert_eq!(res.status, 200);
    let h = &host;
    eventually(
        "the callback is being processed",
        Duration::from_secs(30),
        move || async move { h.logged_runs("event-counter", true).pop() },
    )
    .await;
    host.kill();

    host.restart().await;
    let h = &host;
    eventually(
        "processed after the restart",
        Duration::from_secs(60),
        move || async move {
            let stats = h.admin_get("/stats").await.json();
            let e = &stats["engagelab"];
            (e["processed"] == 1 && e["queued"] == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        host.logged_runs("event-counter", true).len(),
        1,
        "once after the restart"
    );
    let mut delivery = seed_with_id("bounced-sender");
    delivery["from"]["emailAddress"]["address"] = json!("12345@gmail.com");
    let enriched = host.deliver("/enrich", &delivery).await.json();
    assert_eq!(
        enriched["actions"][0]["value"]["tags"],
        json!(["Soft-bounced"]),
        "the bounce was recorded: {enriched}"
    );
}
