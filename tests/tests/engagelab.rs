//! Issue 6: EngageLab callbacks verified, answered at once, queued durably,
//! processed by event plugins, and feeding the enrichment of later
//! Emailgistics deliveries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enrichd::engagelab::verify::sign;
use enrichd_tests::{plugin_toml, plugin_toml_as, raw_request, seed_payload, Response, TestServer};
use serde_json::{json, Value};
use tokio::time::Instant;

const PATH: &str = "/engagelab-webhook";
const APP_KEY: &str = "engagelab-test-app-key";
const KINDS: [&str; 10] = [
    "target",
    "sent",
    "delivered",
    "invalid_email",
    "soft_bounce",
    "open",
    "click",
    "unsubscribe",
    "report_spam",
    "route",
];

fn fixture(kind: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/engagelab/{kind}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The tracker and event-echo on the EngageLab route; engagement-enrich on
/// the Emailgistics route, reading the tracker's namespace. `extra_chain`
/// goes first on the EngageLab route.
fn config(extra_plugins: &str, extra_chain: &str) -> String {
    format!(
        "{}{}{}{extra_plugins}\
         [[engagelab]]\npath = \"{PATH}\"\napp_keys = [{{ value = \"old-key\" }}, {{ value = \"{APP_KEY}\" }}]\n\
         chain = [{extra_chain} {{ plugin = \"engagement-tracker\" }}, {{ plugin = \"event-echo\" }}]\n\
         [[route]]\npath = \"/emailgistics-webhook\"\nchain = [{{ plugin = \"engagement-enrich\" }}]\n",
        plugin_toml("engagement-tracker", &["kv", "log"], ""),
        plugin_toml("event-echo", &["kv"], ""),
        plugin_toml(
            "engagement-enrich",
            &["kv", "config"],
            "kv_read = [\"engagement-tracker\"]\n[plugin.config]\nsoft-bounce-threshold = \"1\""
        ),
    )
}

/// POST a callback with the given headers (name, value).
async fn post(server: &TestServer, body: &str, headers: &[(&str, String)]) -> Response {
    let mut req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw_request(server.addr, req.as_bytes()).await
}

fn signed(ts: &str, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-WebHook-Timestamp", ts.to_owned()),
        ("X-WebHook-AppKey", "email".to_owned()),
        ("X-WebHook-Signature", sign(key, ts)),
    ]
}

async fn send(server: &TestServer, body: &str) -> Response {
    post(server, body, &signed(&now_secs().to_string(), APP_KEY)).await
}

async fn kv(server: &TestServer, ns: &str, key: &str) -> Option<String> {
    server
        .app
        .services()
        .kv
        .as_ref()
        .unwrap()
        .get(ns, key)
        .await
        .unwrap()
}

#[tokio::test]
async fn all_ten_documented_callbacks_are_accepted_and_recorded() {
    let server = TestServer::start(&config("", "")).await;
    for kind in KINDS {
        let res = send(&server, &fixture(kind)).await;
        assert_eq!(res.status, 200, "{kind}");
        assert_eq!(res.json()["status"], "accepted", "{kind}");
    }
    server.drained().await;
    assert_eq!(
        kv(&server, "event-echo", "count").await.as_deref(),
        Some("10")
    );
    for kind in KINDS {
        let body: Value = serde_json::from_str(&fixture(kind)).unwrap();
        let id = body["message_id"].as_str().unwrap();
        let seen: Value = serde_json::from_str(
            &kv(&server, "event-echo", &format!("{kind}:{id}"))
                .await
                .expect(kind),
        )
        .unwrap();
        assert_eq!(seen["kind-name"], kind);
        assert_eq!(seen["itime"], body["itime"]);
    }
    // Kind-specific fields reached the plugins.
    let bounce: Value = serde_json::from_str(
        &kv(
            &server,
            "event-echo",
            "soft_bounce:1676537131885_95_4921_8644.sc-10_2_226_96-test0$12345@gmail.com",
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (bounce["error-code"].as_i64(), bounce["sub-stat"].as_i64()),
        (Some(509), Some(509))
    );
    assert_eq!(bounce["address"], "12345@gmail.com");
    let click: Value = serde_json::from_str(
        &kv(
            &server,
            "event-echo",
            "click:1676618583015_104117_18546_8822.sc-10_43_7_16-inbound0$12345@hotmail.com",
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(click["url"], "https://www.engagelab.com/zh_CN/email/");
    let route: Value = serde_json::from_str(
        &kv(
            &server,
            "event-echo",
            "route:01b6f68b-da52-4f6f-a049-68d0ca01dd8c",
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        route["address"], "12345@outlook.com",
        "a reply is about its sender"
    );

    // The tracker's record for the gmail recipient.
    let state: Value = serde_json::from_str(
        &kv(&server, "engagement-tracker", "12345@gmail.com")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["hardBounces"], 1);
    assert_eq!(state["softBounces"], 1);
    assert_eq!(state["unsubscribed"], true);
    assert_eq!(state["spamReports"], 1);
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["engagelab"]["received"], 10);
    assert_eq!(stats["engagelab"]["processed"], 10);
}

#[tokio::test]
async fn bad_signatures_missing_headers_wrong_app_keys_and_stale_timestamps_get_401() {
    let server = TestServer::start(&config("", "")).await;
    let body = fixture("open");
    let ts = now_secs().to_string();
    let mut cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("bad signature", signed(&ts, "not-the-key")),
        ("signature of another timestamp", {
            let mut h = signed(&ts, APP_KEY);
            h[2].1 = sign(APP_KEY, &(now_secs() - 1).to_string());
            h
        }),
        ("wrong app key header", {
            let mut h = signed(&ts, APP_KEY);
            h[1].1 = "sms".into();
            h
        }),
        (
            "stale timestamp",
            signed(&(now_secs() - 301).to_string(), APP_KEY),
        ),
        (
            "future timestamp",
            signed(&(now_secs() + 301).to_string(), APP_KEY),
        ),
    ];
    for missing in 0..3 {
        let mut h = signed(&ts, APP_KEY);
        let name = h.remove(missing).0;
        cases.push((name, h));
    }
    let refused = cases.len();
    for (what, headers) in cases {
        let res = post(&server, &body, &headers).await;
        assert_eq!(res.status, 401, "{what}");
        assert!(res.body.is_empty(), "{what}: 401 explains nothing");
    }
    // Nothing refused was queued. Not read from the queue's length: the
    // worker drains a wrongly queued callback within milliseconds. The
    // counters, and below the plugin's kv once the accepted ones are done.
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["engagelab"]["refused"], refused, "{stats}");
    assert_eq!(stats["engagelab"]["received"], 0, "{stats}");

    // Accepted: a millisecond timestamp, the older key of a rotation, and
    // an upper-case hex signature.
    let ms = (now_secs() * 1000).to_string();
    assert_eq!(
        post(&server, &fixture("click"), &signed(&ms, APP_KEY))
            .await
            .status,
        200
    );
    assert_eq!(
        post(&server, &fixture("sent"), &signed(&ts, "old-key"))
            .await
            .status,
        200
    );
    let mut upper = signed(&ts, APP_KEY);
    upper[2].1 = upper[2].1.to_uppercase();
    assert_eq!(
        post(&server, &fixture("delivered"), &upper).await.status,
        200
    );

    // Only the three accepted ones reached the plugins: event-echo counted
    // three runs and never saw the refused `open`.
    server.drained().await;
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["engagelab"]["received"], 3, "{stats}");
    assert_eq!(stats["engagelab"]["processed"], 3, "{stats}");
    assert_eq!(
        kv(&server, "event-echo", "count").await.as_deref(),
        Some("3")
    );
    let open_id: Value = serde_json::from_str(&body).unwrap();
    let open_key = format!("open:{}", open_id["message_id"].as_str().unwrap());
    assert_eq!(kv(&server, "event-echo", &open_key).await, None);
}

#[tokio::test]
async fn a_callback_is_answered_at_once_even_when_the_plugin_is_slow() {
    let slow = plugin_toml_as(
        "slow",
        "hostile",
        &["config"],
        "timeout_ms = 20000\n[plugin.config]\nmode = \"spin\"\nms = \"4000\"",
    );
    let server = TestServer::start(&config(&slow, "{ plugin = \"slow\" },")).await;
    let started = Instant::now();
    let res = send(&server, &fixture("open")).await;
    let took = started.elapsed();
    assert_eq!(res.status, 200);
    assert!(
        took < Duration::from_secs(3),
        "EngageLab waits 3 s at most; took {took:?}"
    );
    // And it is processed, after the slow plugin.
    server.drained().await;
    assert_eq!(
        kv(&server, "event-echo", "count").await.as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_duplicate_callback_is_processed_once() {
    let server = TestServer::start(&config("", "")).await;
    let body = fixture("unsubscribe");
    let first = send(&server, &body).await;
    let second = send(&server, &body).await;
    assert_eq!(first.json()["status"], "accepted");
    assert_eq!(
        (second.status, second.json()["status"].clone()),
        (200, json!("duplicate"))
    );
    server.drained().await;
    assert_eq!(
        kv(&server, "event-echo", "count").await.as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn unknown_kinds_and_fields_are_accepted_and_kept() {
    let server = TestServer::start(&config("", "")).await;
    let body = json!({
        "server": "email", "message_id": "m-future", "to": "Someone@Example.com", "itime": 1700000000000u64,
        "status": {"message_status": "deferred", "status_data": {"retry_in": 60}},
        "brand_new": {"nested": true}, "custom_args": {"campaign": "spring"}
    })
    .to_string();
    assert_eq!(send(&server, &body).await.status, 200);
    server.drained().await;
    let seen: Value = serde_json::from_str(
        &kv(&server, "event-echo", "deferred:m-future")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(seen["address"], "someone@example.com");
    assert_eq!(seen["custom-args"], "{\"campaign\":\"spring\"}");
    // Not JSON at all is refused.
    assert_eq!(send(&server, "not json").await.status, 400);
}

#[tokio::test]
async fn a_soft_bounce_and_an_unsubscribe_tag_the_next_delivery_from_that_address() {
    let server = TestServer::start(&config("", "")).await;
    // Before: nothing is known about the address.
    let mut delivery = seed_payload();
    delivery["id"] = json!("before");
    delivery["from"]["emailAddress"]["address"] = json!("12345@gmail.com");
    delivery["sender"]["emailAddress"]["address"] = json!("12345@gmail.com");
    let before = server
        .deliver("/emailgistics-webhook", &delivery)
        .await
        .json();
    assert_eq!(before["message"], "no actions");

    for kind in ["soft_bounce", "unsubscribe"] {
        assert_eq!(send(&server, &fixture(kind)).await.status, 200);
    }
    server.drained().await;
    delivery["id"] = json!("after");
    let after = server
        .deliver("/emailgistics-webhook", &delivery)
        .await
        .json();
    assert_eq!(after["actions"][0]["name"], "Engagement flags");
    assert_eq!(
        after["actions"][0]["value"]["tags"],
        json!(["Soft-bounced", "Unsubscribed"])
    );
    assert_eq!(
        after["actions"].as_array().unwrap().len(),
        1,
        "no open or click recorded yet"
    );

    // The documented open is for the hotmail recipient: its next delivery
    // carries the last engagement (itime 1676620370426).
    assert_eq!(send(&server, &fixture("open")).await.status, 200);
    server.drained().await;
    delivery["id"] = json!("from-hotmail");
    delivery["from"]["emailAddress"]["address"] = json!("12345@hotmail.com");
    delivery["sender"]["emailAddress"]["address"] = json!("12345@hotmail.com");
    let opened = server
        .deliver("/emailgistics-webhook", &delivery)
        .await
        .json();
    assert_eq!(opened["actions"][0]["name"], "Engagement context");
    assert_eq!(
        opened["actions"][0]["value"],
        json!({"lastEngagement": "2023-02-17T07:52:50Z"})
    );
}

#[tokio::test]
async fn kv_limits_and_grants_obeyed_and_violated() {
    let probe = |name: &str, read: &str| {
        plugin_toml_as(
            name,
            "hostile",
            &["kv", "config"],
            &format!("kv_read = [{read}]\n[plugin.config]\nmode = \"kv-probe\""),
        )
    };
    let plugins = format!(
        "{}{}",
        probe("granted", "\"engagement-tracker\""),
        probe("ungranted", "")
    );
    let routes = "[[route]]\npath = \"/granted\"\nchain = [{ plugin = \"granted\" }]\n\
                  [[route]]\npath = \"/ungranted\"\nchain = [{ plugin = \"ungranted\" }]\n";
    let server = TestServer::start(&format!("{}{routes}", config(&plugins, ""))).await;
    server
        .app
        .services()
        .kv
        .as_ref()
        .unwrap()
        .set_within(
            "engagement-tracker",
            "probe",
            "tracked",
            enrichd::storage::Quota::UNLIMITED,
        )
        .await
        .unwrap();
    let granted = server.deliver("/granted", &seed_payload()).await.json();
    assert_eq!(
        granted["actions"][0]["value"],
        json!({"set": "ok:", "get": "ok:1", "getFrom": "ok:tracked", "bigValue": "invalid", "longKey": "invalid"})
    );
    let ungranted = server.deliver("/ungranted", &seed_payload()).await.json();
    assert_eq!(ungranted["actions"][0]["value"]["getFrom"], "denied");
    assert_eq!(
        ungranted["actions"][0]["value"]["get"], "ok:1",
        "its own namespace is always readable"
    );
}

#[tokio::test]
async fn a_trickling_callback_body_gets_408_within_engagelabs_3_s() {
    // The body read timeout is the default 10 s and the delivery budget
    // 90 s: the callback's body must still end at EngageLab's 3 s.
    let server = TestServer::start(&config("", "")).await;
    let body = fixture("delivered");
    let ts = now_secs().to_string();
    let mut req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in signed(&ts, APP_KEY) {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    // Half the body; the rest never comes.
    req.push_str(&body[..body.len() / 2]);
    let started = Instant::now();
    let res = raw_request(server.addr, req.as_bytes()).await;
    let took = started.elapsed();
    assert_eq!(res.status, 408, "{:?}", String::from_utf8_lossy(&res.body));
    let message = res.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("EngageLab's answer budget of 3000 ms"),
        "{message}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
    assert_eq!(server.queued().await, 0, "nothing was queued");
}
