//! Issue 4: idempotent deliveries that survive restarts, and the delivery
//! log. (The kill -9 tests, on real processes, are in `crash_recovery.rs`.)

use enrichd_tests::{
    crm_sample, plugin_toml, plugin_toml_as, raw_request, seed_payload, TestServer, SECRET,
};
use serde_json::json;

const ROUTE: &str = "/emailgistics-webhook";
const REPLAY: &str = "x-enrichd-replay";

fn config(extra_top: &str, extra_plugins: &str, extra_routes: &str) -> String {
    format!(
        "{extra_top}\n[[crm]]\nname = \"main\"\nkind = \"embedded\"\nseed = {:?}\n{}{}{extra_plugins}\n[[route]]\npath = \"{ROUTE}\"\nsecrets = [{{ value = \"{SECRET}\" }}]\nchain = [{{ plugin = \"crm-enrich\" }}, {{ plugin = \"keyword-router\" }}]\n{extra_routes}",
        crm_sample(),
        plugin_toml("crm-enrich", &["crm", "config"], ""),
        plugin_toml("keyword-router", &["config"], "[plugin.config]\nrules = \"coverage => Policy Desk\""),
    )
}

fn with_id(id: &str) -> serde_json::Value {
    let mut p = seed_payload();
    p["id"] = json!(id);
    p
}

#[tokio::test]
async fn a_sequential_duplicate_is_replayed_byte_for_byte_without_running_plugins() {
    let server = TestServer::start(&config("", "", "")).await;
    let first = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header(REPLAY), None);
    let second = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header(REPLAY), Some("true"));
    assert!(second.header("x-enrichd-answered-at").is_some());
    assert_eq!(second.body, first.body, "byte-identical");
    assert_eq!(server.app.plugin_calls("crm-enrich"), Some(1));
    assert_eq!(server.app.plugin_calls("keyword-router"), Some(1));
    // A different id is a different delivery.
    let other = server.deliver(ROUTE, &with_id("another-id")).await;
    assert_eq!(other.header(REPLAY), None);
    assert_eq!(server.app.plugin_calls("crm-enrich"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_duplicates_run_the_plugins_once_and_get_one_answer() {
    // A plugin slow enough that all copies arrive while the first runs.
    let slow = plugin_toml_as(
        "slow",
        "hostile",
        &["config"],
        "[plugin.config]\nmode = \"spin\"\nms = \"500\"",
    );
    let route = "[[route]]\npath = \"/slow\"\nchain = [{ plugin = \"crm-enrich\" }, { plugin = \"slow\" }]\n";
    let server = TestServer::start(&config("", &slow, route)).await;
    let body = seed_payload().to_string();
    let request = format!(
        "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut copies = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (addr, req) = (server.addr, request.clone());
        copies.spawn(async move { raw_request(addr, req.as_bytes()).await });
    }
    let answers: Vec<_> = copies.join_all().await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert!(
        answers.iter().all(|a| a.body == answers[0].body),
        "one answer for all copies"
    );
    let fresh = answers
        .iter()
        .filter(|a| a.header(REPLAY).is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one copy ran the plugins");
    assert_eq!(server.app.plugin_calls("slow"), Some(1));
    assert_eq!(server.app.plugin_calls("crm-enrich"), Some(1));
    let parsed: serde_json::Value = serde_json::from_slice(&answers[0].body).unwrap();
    assert_eq!(parsed["actions"][2]["value"], json!({"spun_ms": "500"}));
}

#[tokio::test]
async fn a_duplicate_after_a_restart_is_replayed_identically() {
    let cfg = config("", "", "");
    let server = TestServer::start(&cfg).await;
    let first = server.deliver(ROUTE, &seed_payload()).await;
    let dir = server.stop().await;

    let server = TestServer::start_in(dir, &cfg).await;
    let again = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(again.header(REPLAY), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(
        server.app.plugin_calls("crm-enrich"),
        Some(0),
        "no plugin ran in the new process"
    );
}

#[tokio::test]
async fn retry_answers_are_not_stored_and_error_answers_are() {
    let plugins = format!(
        "{}{}",
        plugin_toml_as("flaky", "trap", &[], "on_error = \"retry\""),
        plugin_toml_as("broken", "trap", &[], "on_error = \"error\"")
    );
    let routes = "[[route]]\npath = \"/flaky\"\nchain = [{ plugin = \"flaky\" }]\n\
                  [[route]]\npath = \"/broken\"\nchain = [{ plugin = \"broken\" }]\n";
    let server = TestServer::start(&config("", &plugins, routes)).await;

    for _ in 0..2 {
        let res = server.deliver("/flaky", &seed_payload()).await;
        assert_eq!(res.status, 503);
        assert_eq!(res.header(REPLAY), None);
    }
    assert_eq!(
        server.app.plugin_calls("flaky"),
        Some(2),
        "a 5xx is retried for real"
    );

    let first = server.deliver("/broken", &seed_payload()).await;
    assert_eq!(first.json()["status"], "error");
    let second = server.deliver("/broken", &seed_payload()).await;
    assert_eq!(second.header(REPLAY), Some("true"));
    assert_eq!(second.body, first.body);
    assert_eq!(server.app.plugin_calls("broken"), Some(1));
}

#[tokio::test]
async fn the_same_id_on_different_routes_does_not_collide() {
    let echo = plugin_toml("echo", &[], "");
    let routes = "[[route]]\npath = \"/echo\"\nchain = [{ plugin = \"echo\" }]\n";
    let server = TestServer::start(&config("", &echo, routes)).await;
    let enriched = server.deliver(ROUTE, &seed_payload()).await;
    let echoed = server.deliver("/echo", &seed_payload()).await;
    assert_eq!(
        echoed.header(REPLAY),
        None,
        "another route's answer is not replayed"
    );
    assert_ne!(enriched.body, echoed.body);
    assert_eq!(
        server.deliver("/echo", &seed_payload()).await.body,
        echoed.body
    );
    assert_eq!(
        server.deliver(ROUTE, &seed_payload()).await.body,
        enriched.body
    );
    assert_eq!(server.app.plugin_calls("echo"), Some(1));
    assert_eq!(server.app.plugin_calls("crm-enrich"), Some(1));
}

#[tokio::test]
async fn the_delivery_log_is_served_on_the_admin_listener() {
    let trap = plugin_toml("trap", &[], "");
    let route = "[[route]]\npath = \"/mixed\"\nchain = [{ plugin = \"crm-enrich\" }, { plugin = \"trap\" }]\n";
    let server = TestServer::start(&config("", &trap, route)).await;
    server.deliver(ROUTE, &seed_payload()).await;
    server.deliver("/mixed", &with_id("mixed-1")).await;

    let list = server.admin_get("/deliveries").await.json();
    let ids: Vec<&str> = list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mixed-1", "65e0aaef382d2e93ed1ef9bc"], "newest first");

    let shown = server.admin_get("/deliveries/mixed-1").await;
    assert_eq!(shown.status, 200);
    let d = shown.json();
    assert_eq!(d["route"], "/mixed");
    let plugins = d["record"]["plugins"].as_array().unwrap();
    assert_eq!(plugins[0]["plugin"], "crm-enrich");
    assert_eq!(plugins[0]["outcome"], "applied");
    assert_eq!(plugins[0]["actions"].as_array().unwrap().len(), 2);
    assert!(
        plugins[0]["elapsedUs"].as_u64().is_some() || plugins[0]["elapsed_us"].as_u64().is_some()
    );
    assert_eq!(plugins[1]["outcome"], "failed");
    assert_eq!(plugins[1]["failure"]["kind"], "trap");
    assert!(plugins[1]["failure"]["detail"]
        .as_str()
        .unwrap()
        .contains("deliberate panic"));
    let answer: serde_json::Value = serde_json::from_str(d["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        answer["message"],
        "2 actions from crm-enrich (2); failed: trap (trap)"
    );

    assert_eq!(server.admin_get("/deliveries/nope").await.status, 404);
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["deliveries"], 2);
    assert_eq!(stats["plugins"]["crm-enrich"]["calls"], 2);
}

#[tokio::test]
async fn the_cli_reads_the_log_while_the_server_runs_and_after_it_stopped() {
    let server = TestServer::start(&config("", "", "")).await;
    server.deliver(ROUTE, &seed_payload()).await;
    // The CLI finds the running server through `admin_listen`.
    let path = server.dir().join("enrichd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("admin_listen = \"{}\"\n{text}", server.admin_addr),
    )
    .unwrap();
    let config = enrichd::config::Config::load(&path).unwrap();

    let (c, cfg2) = (config.clone(), config.clone());
    let listed = tokio::task::spawn_blocking(move || enrichd::cli::deliveries::list(&c, 0, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "65e0aaef382d2e93ed1ef9bc");
    assert!(listed[0].message.starts_with("3 actions"));
    let shown = tokio::task::spawn_blocking(move || {
        enrichd::cli::deliveries::show(&cfg2, "65e0aaef382d2e93ed1ef9bc", Some(ROUTE))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(shown.status, 200);

    // After the server stopped, the store is read directly.
    let dir = server.stop().await;
    let c = config.clone();
    let listed = tokio::task::spawn_blocking(move || enrichd::cli::deliveries::list(&c, 0, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listed.len(), 1);
    drop(dir);
}

#[tokio::test]
async fn the_store_is_bounded_and_expired_answers_are_swept() {
    let server = TestServer::start(&config("[idempotency]\nmax_records = 3\n", "", "")).await;
    for i in 0..5 {
        server.deliver(ROUTE, &with_id(&format!("id-{i}"))).await;
    }
    let report = server.app.storage().sweep().await.unwrap();
    assert_eq!((report.evicted, report.remaining), (2, 3));
    // The oldest were evicted: id-0 runs again, id-4 is still replayed.
    assert_eq!(
        server.deliver(ROUTE, &with_id("id-4")).await.header(REPLAY),
        Some("true")
    );
    assert_eq!(
        server.deliver(ROUTE, &with_id("id-0")).await.header(REPLAY),
        None
    );
}

/// Moves tokio's clock (which the store's retention clock follows) forward
/// by `by` at once. Time is resumed afterwards: with a paused clock, waiting
/// on a socket would let tokio jump straight to the next timer.
async fn jump(by: std::time::Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn answers_expire_after_the_retention_window() {
    let echo = plugin_toml("echo", &[], "");
    let routes = "[[route]]\npath = \"/echo\"\nchain = [{ plugin = \"echo\" }]\n";
    let server = TestServer::start(&config(
        "[idempotency]\nretention_hours = 72\n",
        &echo,
        routes,
    ))
    .await;
    let first = server.deliver("/echo", &seed_payload()).await;
    assert_eq!(first.header(REPLAY), None);
    server.deliver("/echo", &with_id("never-again")).await;

    jump(std::time::Duration::from_secs(71 * 3600)).await;
    let again = server.deliver("/echo", &seed_payload()).await;
    assert_eq!(again.header(REPLAY), Some("true"), "within 72 h");
    server.app.storage().sweep().await.unwrap();
    assert_eq!(server.stored().await, 2, "nothing expired yet");

    jump(std::time::Duration::from_secs(2 * 3600)).await;
    let late = server.deliver("/echo", &seed_payload()).await;
    assert_eq!(
        late.header(REPLAY),
        None,
        "after 72 h the delivery runs again"
    );
    assert_eq!(server.app.plugin_calls("echo"), Some(3));
    server.app.storage().sweep().await.unwrap();
    assert_eq!(
        server.stored().await,
        1,
        "the expired answer was swept; the new one stays"
    );
}
