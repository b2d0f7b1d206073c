//! Issue 12: `enrichd replay` on the real binary, of deliveries a real
//! server answered (loopback HTTP CRM, real sled, plugins built from
//! source): the recorded host-call answers are served back, a new plugin
//! version's difference is shown, unrecorded calls answer `unavailable`,
//! the recording is bounded, replay writes nothing, and records stored
//! before recordings still replay.

use std::process::Output;

use enrichd::storage::{Claimed, DeliveryKey, StoredDelivery};
use enrichd_tests::crm_server::{FakeCrm, Mode};
use enrichd_tests::{
    enrichd_bin, plugin_path, plugin_toml, plugin_toml_as, seed_payload, TestServer,
};
use serde_json::{json, Value};

const ROUTE: &str = "/hook";
/// The customer the deliveries come from; the probe-capabilities plugin
/// looks up another address (`rstorrie@pinnilly.com`), which is never
/// recorded.
const CUSTOMER: &str = "adele@contoso.com";

fn customer(tier: &str) -> Value {
    json!({"claimNumber": "CLM-1", "policyNumber": "POL-1", "region": "EMEA", "tier": tier})
}

fn delivery(id: &str) -> Value {
    let mut p = seed_payload();
    p["id"] = json!(id);
    p["from"]["emailAddress"]["address"] = json!(CUSTOMER);
    p["sender"]["emailAddress"]["address"] = json!(CUSTOMER);
    p
}

/// crm-enrich on `/hook` over `crm`, then `more` (TOML and chain entries).
async fn start(crm: &FakeCrm, more_plugins: &str, more_chain: &str) -> TestServer {
    let server = TestServer::start(&format!(
        "{}{}{more_plugins}[[route]]\npath = \"{ROUTE}\"\nchain = [{{ plugin = \"crm-enrich\" }}{more_chain}]\n",
        crm.source_toml("", "ttl_secs = 60"),
        plugin_toml("crm-enrich", &["crm", "log", "config"], ""),
    ))
    .await;
    // The CLI finds the running server (which holds the sled lock) through
    // `admin_listen`.
    let path = server.dir().join("enrichd.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        format!("admin_listen = \"{}\"\n{text}", server.admin_addr),
    )
    .expect("write config");
    server
}

/// `enrichd replay -c <dir>/enrichd.toml <args>`, off the async workers.
async fn replay(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(enrichd_bin!());
    cmd.arg("replay")
        .arg("-c")
        .arg(dir.join("enrichd.toml"))
        .args(args)
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || cmd.output().expect("run enrichd replay"))
        .await
        .expect("replay ran")
}

/// Assert `enrichd replay` exited with `code`, showing its output if not.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn names(actions: &Value) -> Vec<&str> {
    actions
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default()
}

async fn record(server: &TestServer, id: &str) -> Value {
    server.admin_get(&format!("/deliveries/{id}")).await.json()["record"].clone()
}

#[tokio::test]
async fn issue_12_replay_serves_the_recorded_crm_answer_after_the_crm_changed() {
    let crm = FakeCrm::start().await;
    crm.add_customer(CUSTOMER, customer("gold"));
    let server = start(&crm, "", "").await;
    let live = server.deliver(ROUTE, &delivery("d1")).await.json();
    assert_eq!(
        names(&live["actions"]),
        ["Apply CRM context", "Tag VIP customers"]
    );

    // The record keeps the lookup and its answer, whole.
    let rec = record(&server, "d1").await;
    let calls = &rec["plugins"][0]["host_calls"];
    assert!(calls.get("truncated").is_none(), "{calls}");
    let lookup = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call"] == "crm.lookup-email")
        .expect("the lookup is recorded");
    assert_eq!(lookup["args"], json!([CUSTOMER]));
    assert_eq!(lookup["ok"]["provenance"], "fresh");
    assert!(lookup["ok"]["fields"]
        .as_array()
        .unwrap()
        .contains(&json!(["tier", "gold"])));
    assert!(rec["payload"].as_str().unwrap().contains(CUSTOMER));

    // The customer is no longer a VIP, and the CRM is then down: replay
    // asks neither.
    crm.add_customer(CUSTOMER, customer("standard"));
    let asked = crm.email_calls();
    let out = replay(server.dir(), &["d1"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 0);
    assert!(text.contains("plugin crm-enrich: identical"), "{text}");
    assert!(text.trim_end().ends_with("identical"), "{text}");
    assert_eq!(crm.email_calls(), asked, "replay asked the CRM");

    let out = replay(server.dir(), &["d1", "--json"]).await;
    assert_exit(&out, 0);
    let r = json_of(&out);
    assert_eq!(r["identical"], true);
    let new = &r["plugins"][0]["sides"]["new"];
    assert_eq!(
        names(&new["actions"]),
        ["Apply CRM context", "Tag VIP customers"]
    );
    assert_eq!(r["answer"]["new"]["body"], live);
    assert_eq!(r["plugins"][0]["unrecorded"], json!([]));
}

#[tokio::test]
async fn issue_12_replay_with_a_new_plugin_version_shows_the_diff_and_the_unrecorded_calls() {
    let crm = FakeCrm::start().await;
    crm.add_customer(CUSTOMER, customer("gold"));
    let server = start(&crm, "", "").await;
    server.deliver(ROUTE, &delivery("d2")).await;

    // The "new version" reads config key `probe` and looks up
    // rstorrie@pinnilly.com: neither was recorded.
    let swap = format!("crm-enrich={}", plugin_path("probe-capabilities").display());
    let out = replay(server.dir(), &["d2", "--plugin", &swap]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 2);
    assert!(text.contains("plugin crm-enrich: DIFFERS"), "{text}");
    assert!(
        text.contains("unrecorded  crm.lookup-email(rstorrie@pinnilly.com) → unavailable"),
        "{text}"
    );
    assert!(text.contains("unrecorded  config.get(probe)"), "{text}");
    assert!(text.contains("differs (exit status 2)"), "{text}");

    let out = replay(server.dir(), &["d2", "--plugin", &swap, "--json"]).await;
    assert_exit(&out, 2);
    let r = json_of(&out);
    assert_eq!(r["identical"], false);
    let p = &r["plugins"][0];
    // Two recorded actions became one new one: one change, one removal.
    let kinds: Vec<&str> = p["sides"]["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["changed", "removed"], "{}", p["sides"]["diff"]);
    let probe = &p["sides"]["new"]["actions"][0]["value"];
    assert_eq!(probe["crm"], "unavailable", "{probe}");
    assert_eq!(probe["config"], "unavailable", "{probe}");
    assert_eq!(probe["log"], "ok");
    assert_eq!(p["unrecorded_total"], 2);
    assert!(!r["answer"]["diff"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn issue_12_a_recording_over_its_bound_is_marked_truncated_and_replays_as_not_recorded() {
    let crm = FakeCrm::start().await;
    let mut big = customer("gold");
    // One answer over the per-call bound (16 KiB).
    big["notes"] = json!("n".repeat(20 * 1024));
    crm.add_customer(CUSTOMER, big);
    let server = start(&crm, "", "").await;
    let live = server.deliver(ROUTE, &delivery("d3")).await.json();
    assert_eq!(
        names(&live["actions"]),
        ["Apply CRM context", "Tag VIP customers"]
    );

    let rec = record(&server, "d3").await;
    let calls = &rec["plugins"][0]["host_calls"];
    let t = &calls["truncated"];
    let lookup_at = calls["calls"].as_array().unwrap().len();
    assert_eq!(t["bound"], "per call", "{calls}");
    assert_eq!(t["from_call"], lookup_at);
    assert_eq!(t["max_bytes"], 16 * 1024);
    assert!(calls.to_string().len() <= 16 * 1024 + 512);

    let out = replay(server.dir(), &["d3", "--json"]).await;
    assert_exit(&out, 2);
    let r = json_of(&out);
    let p = &r["plugins"][0];
    assert_eq!(p["unrecorded"][0]["call"], "crm.lookup-email");
    assert_eq!(p["sides"]["new"]["outcome"], "failed");
}

#[tokio::test]
async fn issue_12_replay_writes_nothing_and_serves_the_recorded_kv_reads() {
    let crm = FakeCrm::start().await;
    crm.add_customer(CUSTOMER, customer("gold"));
    let hostile = plugin_toml(
        "hostile",
        &["kv", "config"],
        "[plugin.config]\nmode = \"kv-probe\"\nns = \"hostile\"\n",
    );
    let server = start(&crm, &hostile, ", { plugin = \"hostile\" }").await;
    let live = server.deliver(ROUTE, &delivery("d4")).await.json();
    let kv = live["actions"][2]["value"].clone();
    assert_eq!(kv["get"], "ok:1", "{live}");

    // After the delivery the value changes; replay must still read "1" and
    // must not write it back.
    let store = server.app.storage().kv.clone();
    let quota = enrichd::storage::Quota {
        max_keys: 100,
        max_bytes: 1 << 20,
    };
    store
        .set_within("hostile", "probe", "changed", quota)
        .await
        .unwrap();
    drop(store); // it holds the sled database open
    let dir = server.stop().await;
    // The server is gone: replay opens the store itself.
    let out = replay(dir.path(), &["d4", "--json"]).await;
    assert_exit(&out, 0);
    let r = json_of(&out);
    assert_eq!(r["plugins"][1]["sides"]["new"]["actions"][0]["value"], kv);

    let config = enrichd::config::Config::load(&dir.path().join("enrichd.toml")).unwrap();
    let storage = enrichd::storage::open(&config.storage_settings(), enrichd::clock::Clock::new())
        .await
        .unwrap();
    assert_eq!(
        storage.kv.get("hostile", "probe").await.unwrap().as_deref(),
        Some("changed"),
        "replay wrote to the kv"
    );
}

#[tokio::test]
async fn issue_12_a_record_stored_before_recordings_replays_with_every_call_not_recorded() {
    let crm = FakeCrm::start().await;
    crm.add_customer(CUSTOMER, customer("gold"));
    let server = start(&crm, "", "").await;
    server.deliver(ROUTE, &delivery("d5")).await;
    let answers = server.app.storage().answers.clone();
    let stored = answers.find("d5", Some(ROUTE)).await.unwrap().remove(0);

    // The same delivery as an older enrichd stored it: no recording, no
    // payload.
    let store_old = |id: &str, keep_payload: bool| {
        let mut old: StoredDelivery = stored.clone();
        old.id = id.to_owned();
        let rec = old.record.as_object_mut().unwrap();
        if !keep_payload {
            rec.remove("payload");
        }
        for p in rec["plugins"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("host_calls");
        }
        old
    };
    for (id, keep) in [("old-1", true), ("old-2", false)] {
        let old = store_old(id, keep);
        let Claimed::Leader(lease) = answers
            .claim(
                &DeliveryKey::new(ROUTE, id),
                std::time::Duration::from_secs(30),
            )
            .await
            .unwrap()
        else {
            panic!("claim")
        };
        answers.complete(&lease, &old).await.unwrap();
    }

    let out = replay(server.dir(), &["old-1", "--json"]).await;
    assert_exit(&out, 2);
    let r = json_of(&out);
    let p = &r["plugins"][0];
    // crm-enrich reads its settings first, and gives up when it cannot.
    assert_eq!(p["unrecorded"][0]["call"], "config.get", "{p}");
    assert_eq!(p["sides"]["new"]["outcome"], "failed");
    assert_eq!(
        names(&p["sides"]["old"]["actions"]),
        ["Apply CRM context", "Tag VIP customers"]
    );

    // No payload in the record: replay says what to pass, then takes it.
    let out = replay(server.dir(), &["old-2"]).await;
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keeps no payload") && err.contains("--payload"),
        "{err}"
    );
    let file = server.dir().join("payload.json");
    std::fs::write(&file, delivery("d5").to_string()).unwrap();
    let out = replay(
        server.dir(),
        &["old-2", "--payload", file.to_str().unwrap(), "--json"],
    )
    .await;
    assert_exit(&out, 2);
    assert_eq!(
        json_of(&out)["plugins"][0]["sides"]["new"]["outcome"],
        "failed"
    );
}

/// http-fetch as `fetch`, granted `http` to `crm` only, fetching the
/// customer `email` from it twice (`count = 2`): the chain entry to add.
fn fetch_from(crm: &FakeCrm, email: &str) -> String {
    plugin_toml_as(
        "fetch",
        "http-fetch",
        &["http", "config"],
        &format!(
            "allowed_hosts = [\"http://{addr}\"]\n[plugin.config]\n\
             url = \"http://{addr}/customers?email={email}\"\ncount = \"2\"\n",
            addr = crm.addr
        ),
    )
}

/// The recorded requests of a plugin's record entry.
fn recorded_requests(plugin: &Value) -> Vec<Value> {
    plugin["host_calls"]["calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter(|c| c["call"] == "outgoing-handler.handle")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn issue_12_replay_serves_the_recorded_http_answers_after_the_service_changed_and_went_down()
{
    let crm = FakeCrm::start().await;
    crm.add_customer(CUSTOMER, customer("gold"));
    let fetch = fetch_from(&crm, CUSTOMER);
    let server = start(&crm, &fetch, ", { plugin = \"fetch\" }").await;
    let live = server.deliver(ROUTE, &delivery("h1")).await.json();
    let fields = live["actions"][2]["value"].clone();
    assert!(
        fields["r1"].as_str().unwrap().starts_with("status=200"),
        "{live}"
    );
    assert!(fields["body"].as_str().unwrap().contains("gold"), "{live}");

    // Both answers are on the tape, whole, without the query string.
    let rec = record(&server, "h1").await;
    let requests = recorded_requests(&rec["plugins"][1]);
    assert_eq!(requests.len(), 2, "{}", rec["plugins"][1]);
    let url = format!("http://{}/customers", crm.addr);
    for r in &requests {
        assert_eq!(r["args"], json!(["GET", url]));
        assert_eq!(r["ok"]["status"], 200);
        assert_eq!(
            r["ok"]["headers"],
            json!([["content-type", "application/json"]])
        );
        assert!(r["ok"]["body"].as_str().unwrap().contains("gold"), "{r}");
    }

    // The service now answers otherwise, then not at all: replay asks it
    // nothing and shows the recorded answers.
    crm.add_customer(CUSTOMER, customer("standard"));
    crm.set_mode(Mode::Down);
    let asked = crm.email_calls();
    let out = replay(server.dir(), &["h1", "--json"]).await;
    assert_exit(&out, 0);
    let r = json_of(&out);
    let p = &r["plugins"][1];
    assert_eq!(p["sides"]["new"]["actions"][0]["value"], fields, "{p}");
    assert_eq!(p["unrecorded"], json!([]), "{p}");
    assert_eq!(crm.email_calls(), asked, "replay made a request");
}

#[tokio::test]
async fn issue_12_an_http_answer_over_the_bound_is_marked_truncated_and_replays_as_not_recorded() {
    let crm = FakeCrm::start().await;
    crm.add_customer(CUSTOMER, customer("gold"));
    let mut big = customer("gold");
    // One body over the per-call bound (16 KiB).
    big["notes"] = json!("n".repeat(20 * 1024));
    crm.add_customer("big@contoso.com", big);
    let fetch = fetch_from(&crm, "big@contoso.com");
    let server = start(&crm, &fetch, ", { plugin = \"fetch\" }").await;
    let live = server.deliver(ROUTE, &delivery("h2")).await.json();
    let fields = &live["actions"][2]["value"];
    assert!(
        fields["r0"]
            .as_str()
            .unwrap()
            .starts_with("status=200 bytes=2"),
        "{live}"
    );

    let rec = record(&server, "h2").await;
    let calls = &rec["plugins"][1]["host_calls"];
    assert!(recorded_requests(&rec["plugins"][1]).is_empty(), "{calls}");
    let t = &calls["truncated"];
    assert_eq!(t["bound"], "per call", "{calls}");
    assert_eq!(t["from_call"], calls["calls"].as_array().unwrap().len());
    assert_eq!(t["left_out"], 2, "both requests: {calls}");
    assert!(
        calls.to_string().len() <= 16 * 1024,
        "{}",
        calls.to_string().len()
    );

    let out = replay(server.dir(), &["h2", "--json"]).await;
    assert_exit(&out, 2);
    let r = json_of(&out);
    let p = &r["plugins"][1];
    let url = format!("http://{}/customers", crm.addr);
    assert_eq!(p["unrecorded"][0]["call"], "outgoing-handler.handle", "{p}");
    assert_eq!(p["unrecorded"][0]["args"], json!(["GET", url]));
    assert_eq!(p["unrecorded_total"], 2);
    // A field value keeps 100 characters: the reason is in the text below.
    let r0 = p["sides"]["new"]["actions"][0]["value"]["r0"]
        .as_str()
        .unwrap();
    assert!(
        r0.starts_with(
            "error=ErrorCode::InternalError(Some(\"not recorded: outgoing-handler.handle(GET, "
        ),
        "{r0}"
    );
    // The text says it too.
    let out = replay(server.dir(), &["h2"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("unrecorded  outgoing-handler.handle(GET, {url})")),
        "{text}"
    );
}
