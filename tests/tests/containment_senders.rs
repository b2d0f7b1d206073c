//! Issue 9, senders and the event path: what a sender (an Emailgistics or
//! EngageLab client, or anyone who can reach the listener) can make the
//! host spend is bounded — the duplicate filter is swept, the event queue is
//! capped, retries wait without blocking other callbacks, event calls have
//! permits of their own and a call that never started is retried, open
//! connections are capped, a trickling body times out, and keyed fields are
//! length-capped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enrichd::engagelab::verify::sign;
use enrichd_tests::{
    plugin_toml, plugin_toml_as, raw_request, seed_payload, signed_callback, Response, TestServer,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const APP_KEY: &str = "containment-app-key";
const EVENTS: &str = "/engagelab";
const DELIVERIES: &str = "/hook";

fn fixture(kind: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/engagelab/{kind}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// The `n`th distinct callback (a `delivered` with its own message id).
fn callback(n: usize) -> String {
    let mut body: Value = serde_json::from_str(&fixture("delivered")).unwrap();
    body["message_id"] = json!(format!("containment-{n}"));
    body.to_string()
}

/// Top-level keys (before any table), then event-echo on the EngageLab
/// route and echo on the delivery route, both with 2 s timeouts; `extra`
/// is more tables.
fn config(top: &str, extra: &str) -> String {
    format!(
        "{top}\n{}{}{extra}\
         [[engagelab]]\npath = \"{EVENTS}\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\n\
         chain = [{{ plugin = \"event-echo\" }}]\n\
         [[route]]\npath = \"{DELIVERIES}\"\nchain = [{{ plugin = \"echo\" }}]\n",
        plugin_toml("event-echo", &["kv"], "timeout_ms = 2000"),
        plugin_toml("echo", &[], "timeout_ms = 2000"),
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// POST a genuinely signed callback to `path`.
async fn send_to(server: &TestServer, path: &str, body: &str) -> Response {
    signed_callback(server.addr, path, APP_KEY, body).await
}

async fn send(server: &TestServer, body: &str) -> Response {
    send_to(server, EVENTS, body).await
}

async fn echoed(server: &TestServer) -> Option<String> {
    server
        .app
        .services()
        .kv
        .as_ref()
        .unwrap()
        .get("event-echo", "count")
        .await
        .unwrap()
}

/// Wait (bounded, real time) until `done` holds.
async fn until(what: &str, limit: Duration, done: impl AsyncFn() -> bool) {
    let started = std::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stats(server: &TestServer) -> Value {
    server.admin_get("/stats").await.json()
}

// --- the duplicate filter --------------------------------------------------

#[tokio::test]
async fn the_dedupe_tree_shrinks_after_its_window_on_tokios_paused_clock() {
    let server = TestServer::start(&config("", "[events]\ndedupe_hours = 1\n")).await;
    for n in 0..3 {
        assert_eq!(
            send(&server, &callback(n)).await.json()["status"],
            "accepted"
        );
    }
    until("processed", Duration::from_secs(30), async || {
        server.queued().await == 0
    })
    .await;
    assert_eq!(server.seen().await, 3);

    // From here on the server's clock is tokio's, paused: sleeping advances
    // it at once. No HTTP while paused (I/O waits would advance it too).
    tokio::time::pause();
    // Within the window (the hourly sweep ran at start): remembered.
    tokio::time::sleep(Duration::from_secs(50 * 60)).await;
    settle().await;
    assert_eq!(server.seen().await, 3, "forgotten within the window");
    // The window (1 h) and one sweep period (1 h) later: forgotten.
    tokio::time::sleep(Duration::from_secs(75 * 60)).await;
    settle().await;
    let started = std::time::Instant::now();
    while server.seen().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the filter was not swept"
        );
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    tokio::time::resume();
    // Forgotten means a resend would be queued again, as documented.
    assert_eq!(
        send(&server, &callback(0)).await.json()["status"],
        "accepted"
    );
}

/// Let spawned tasks (and the blocking sweep they wait on) run.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(2));
    }
}

// --- the queue cap ---------------------------------------------------------

#[tokio::test]
async fn a_full_event_queue_answers_503_and_nothing_is_lost() {
    let server = TestServer::start(&config("", "[events]\nmax_queued = 2\n")).await;
    // No event call can start: callbacks stay queued.
    let permits = server.app.engine().event_permits();
    let held = permits
        .clone()
        .acquire_many_owned(enrichd::plugin::MAX_CONCURRENT_EVENT_CALLS)
        .await
        .unwrap();
    // Obeyed: up to the cap, accepted.
    for n in 0..2 {
        let res = send(&server, &callback(n)).await;
        assert_eq!(
            (res.status, res.json()["status"].clone()),
            (200, json!("accepted"))
        );
    }
    // Violated: 503 (EngageLab retries), the reason names the setting.
    let full = send(&server, &callback(2)).await;
    assert_eq!(full.status, 503);
    assert_eq!(full.header("retry-after"), Some("60"));
    let reason = full.json()["message"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("max_queued") && reason.contains('2'),
        "{reason}"
    );
    let s = stats(&server).await;
    assert_eq!(
        (
            &s["engagelab"]["queued"],
            &s["engagelab"]["maxQueued"],
            &s["engagelab"]["queueFull"]
        ),
        (&json!(2), &json!(2), &json!(1))
    );
    drop(held);
    until("drained", Duration::from_secs(30), async || {
        server.queued().await == 0
    })
    .await;
    // EngageLab's retry of the refused one is accepted (it was not
    // remembered as seen), and all three are processed once.
    let again = send(&server, &callback(2)).await;
    assert_eq!(again.json()["status"], "accepted");
    until("drained", Duration::from_secs(30), async || {
        server.queued().await == 0
    })
    .await;
    assert_eq!(echoed(&server).await.as_deref(), Some("3"));
}

// --- retries ---------------------------------------------------------------

#[tokio::test]
async fn a_callback_waiting_for_its_retry_does_not_delay_the_others() {
    let failing = plugin_toml_as(
        "failing",
        "hostile",
        &["config"],
        "timeout_ms = 2000\non_error = \"retry\"\n[plugin.config]\nmode = \"guest-error\"\nbytes = \"10\"",
    );
    let route = format!(
        "[[engagelab]]\npath = \"/failing\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\n\
         chain = [{{ plugin = \"failing\" }}]\n[events]\nmax_attempts = 4\n"
    );
    let server = TestServer::start(&config("", &format!("{failing}{route}"))).await;
    assert_eq!(
        send_to(&server, "/failing", &callback(100)).await.status,
        200
    );
    // Two attempts made: the next is due 2 s after the second.
    until("two attempts", Duration::from_secs(30), async || {
        server.app.plugin_calls("failing") == Some(2)
    })
    .await;
    let accepted = tokio::time::Instant::now();
    for n in 0..3 {
        assert_eq!(send(&server, &callback(n)).await.status, 200);
    }
    until("the other callbacks", Duration::from_secs(30), async || {
        echoed(&server).await.as_deref() == Some("3")
    })
    .await;
    let took = accepted.elapsed();
    // A worker sleeping out the 2 s backoff would take ~2 s.
    assert!(
        took < Duration::from_millis(1200),
        "other callbacks waited {took:?} behind a retry"
    );
    assert_eq!(
        server.app.plugin_calls("failing"),
        Some(2),
        "the retry is not made before its time"
    );
    // The failing one still gets all its attempts, then is dropped (logged).
    until("all attempts", Duration::from_secs(30), async || {
        server.queued().await == 0
    })
    .await;
    assert_eq!(server.app.plugin_calls("failing"), Some(4));
    let s = stats(&server).await;
    assert_eq!(s["engagelab"]["retried"], 3);
    assert_eq!(s["engagelab"]["processed"], 4);
}

// --- call permits ----------------------------------------------------------

#[tokio::test]
async fn a_callback_that_got_no_call_permit_is_processed_once_permits_free_up() {
    // event-echo's on_error is the default, skip: before, such a callback
    // was dropped.
    let server = TestServer::start(&config("", "")).await;
    let held = server
        .app
        .engine()
        .event_permits()
        .acquire_many_owned(enrichd::plugin::MAX_CONCURRENT_EVENT_CALLS)
        .await
        .unwrap();
    assert_eq!(send(&server, &callback(1)).await.status, 200);
    // Past the plugin's 2 s timeout, waiting for a permit.
    until("postponed", Duration::from_secs(30), async || {
        server
            .app
            .event_stats()
            .postponed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    assert_eq!(server.queued().await, 1, "still queued");
    assert_eq!(echoed(&server).await, None);
    let s = stats(&server).await;
    assert_eq!(
        (&s["engagelab"]["processed"], &s["engagelab"]["retried"]),
        (&json!(0), &json!(0)),
        "not an attempt"
    );
    drop(held);
    until("processed", Duration::from_secs(30), async || {
        server.queued().await == 0
    })
    .await;
    assert_eq!(echoed(&server).await.as_deref(), Some("1"));
    assert_eq!(stats(&server).await["engagelab"]["processed"], 1);
}

#[tokio::test]
async fn deliveries_and_events_have_their_own_permits_and_a_busy_delivery_is_503() {
    let server = TestServer::start(&config("", "")).await;
    let held = server
        .app
        .engine()
        .delivery_permits()
        .acquire_many_owned(enrichd::plugin::MAX_CONCURRENT_CALLS)
        .await
        .unwrap();
    // Every delivery permit taken: callbacks are still processed at once.
    assert_eq!(send(&server, &callback(1)).await.status, 200);
    until("processed", Duration::from_secs(5), async || {
        echoed(&server).await.as_deref() == Some("1")
    })
    .await;
    // A delivery waits its plugin's timeout (2 s) for a permit, then is
    // answered 503 (echo's on_error is skip), and nothing is stored.
    let started = std::time::Instant::now();
    let busy = server.deliver(DELIVERIES, &seed_payload()).await;
    let took = started.elapsed();
    assert_eq!(busy.status, 503, "{:?}", busy.json());
    let reason = busy.json()["message"].as_str().unwrap().to_owned();
    assert!(reason.contains("busy"), "{reason}");
    assert!(
        took < Duration::from_millis(2200),
        "answered after {took:?}"
    );
    assert_eq!(server.stored().await, 0);
    drop(held);
    let ok = server.deliver(DELIVERIES, &seed_payload()).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("x-enrichd-replay"),
        None,
        "the retry ran the chain"
    );
    assert_eq!(ok.json()["actions"][0]["name"], "echo");
}

// --- connections -----------------------------------------------------------

async fn open_connections(server: &TestServer) -> u64 {
    stats(server).await["connections"]["open"].as_u64().unwrap()
}

#[tokio::test]
async fn open_connections_are_capped_and_healthz_keeps_answering() {
    let server = TestServer::start(&config("max_connections = 4", "")).await;
    let healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // Obeyed: with 3 idle connections open, a 4th is served.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    until_open(&server, 3).await;
    assert_eq!(
        server.deliver(DELIVERIES, &seed_payload()).await.status,
        200
    );
    until_open(&server, 3).await;
    // At the cap: a delivery on the 5th is refused with 503, /healthz answers.
    idle.push(TcpStream::connect(server.addr).await.unwrap());
    until_open(&server, 4).await;
    let mut payload = seed_payload();
    payload["id"] = json!("over-the-cap");
    let refused = server.deliver(DELIVERIES, &payload).await;
    assert_eq!(refused.status, 503);
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("max_connections"));
    let started = std::time::Instant::now();
    assert_eq!(
        raw_request(server.addr, healthz.as_bytes()).await.status,
        200
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    // With the reserve full too, a connection is closed at once, unanswered.
    for _ in 0..enrichd::http::HEALTH_RESERVE_CONNECTIONS {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    until_open(
        &server,
        4 + enrichd::http::HEALTH_RESERVE_CONNECTIONS as u64,
    )
    .await;
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let _ = extra.write_all(healthz.as_bytes()).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), extra.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "closed, not left waiting");
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    let s = stats(&server).await;
    assert_eq!(s["connections"]["max"], 4);
    assert!(s["connections"]["refused"].as_u64().unwrap() >= 1);
    // Free slots serve again.
    drop(idle);
    until_open(&server, 0).await;
    assert_eq!(server.deliver(DELIVERIES, &payload).await.status, 200);
}

async fn until_open(server: &TestServer, n: u64) {
    let started = std::time::Instant::now();
    while open_connections(server).await != n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "open connections never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- slow bodies -----------------------------------------------------------

/// POST `body` to `path` in `chunks` pieces, `gap` apart; the response and
/// how long it took.
async fn trickle(
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
    chunks: usize,
    gap: Duration,
) -> (Response, Duration) {
    let started = std::time::Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // Both kinds of credentials: each route reads its own.
    let ts = now_secs().to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         X-WebHook-Timestamp: {ts}\r\nX-WebHook-AppKey: email\r\nX-WebHook-Signature: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        enrichd_tests::SECRET,
        sign(APP_KEY, &ts),
        body.len()
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for piece in body.chunks(body.len().div_ceil(chunks)) {
            tokio::time::sleep(gap).await;
            wr.write_all(piece).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut buf))
        .await
        .expect("an answer")
        .ok();
    let took = started.elapsed();
    writer.abort();
    (enrichd_tests::parse_response(&buf), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_gets_408_at_the_body_read_timeout() {
    let server = TestServer::start(&config("body_read_timeout_ms = 1000", "")).await;
    let body = seed_payload().to_string().into_bytes();
    // Obeyed: three pieces 200 ms apart arrive within the second.
    let (ok, _) = trickle(
        server.addr,
        DELIVERIES,
        body.clone(),
        3,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", String::from_utf8_lossy(&ok.body));
    // Violated: one byte per 200 ms, twice at once; /healthz stays fast.
    let one = || {
        trickle(
            server.addr,
            DELIVERIES,
            body.clone(),
            body.len(),
            Duration::from_millis(200),
        )
    };
    let ((a, b), worst, _) = enrichd_tests::resources::healthz_worst_during(server.addr, async {
        tokio::join!(one(), one())
    })
    .await;
    for (res, took) in [a, b] {
        assert_eq!(res.status, 408);
        assert!(
            res.json()["message"]
                .as_str()
                .unwrap()
                .contains("body_read_timeout_ms = 1000"),
            "{:?}",
            res.json()
        );
        // 1 s (+10 %), not the 90 s delivery budget.
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_millis(1100),
            "answered after {took:?}"
        );
    }
    assert!(
        worst < Duration::from_millis(100),
        "/healthz took {worst:?}"
    );
    // The same bound holds on the EngageLab route.
    let (res, took) = trickle(
        server.addr,
        EVENTS,
        callback(1).into_bytes(),
        50,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(res.status, 408);
    assert!(
        took < Duration::from_millis(1100),
        "answered after {took:?}"
    );
    assert!(server.queued().await == 0);
}

// --- keyed fields ----------------------------------------------------------

#[tokio::test]
async fn keyed_fields_are_length_capped_with_a_400_before_anything_runs() {
    let server = TestServer::start(&config("", "")).await;
    for (field, limit) in [
        ("id", enrichd::emailgistics::payload::MAX_ID_BYTES),
        ("subject", enrichd::emailgistics::payload::MAX_SUBJECT_BYTES),
        (
            "conversationId",
            enrichd::emailgistics::payload::MAX_ID_BYTES,
        ),
        ("mailbox", enrichd::emailgistics::payload::MAX_ADDRESS_BYTES),
    ] {
        // Obeyed: at the limit.
        let mut at = seed_payload();
        at[field] = json!("a".repeat(limit));
        if field != "id" {
            at["id"] = json!(format!("at-the-limit-{field}"));
        }
        let res = server.deliver(DELIVERIES, &at).await;
        assert_eq!(res.status, 200, "{field}: {:?}", res.json());
        // Violated: one byte more.
        let (calls, stored) = (server.app.plugin_calls("echo"), server.stored().await);
        let mut over = at.clone();
        over[field] = json!("a".repeat(limit + 1));
        if field != "id" {
            over["id"] = json!(format!("over-the-limit-{field}"));
        }
        let res = server.deliver(DELIVERIES, &over).await;
        assert_eq!(res.status, 400, "{field}");
        let message = res.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("`{field}`")) && message.contains(&limit.to_string()),
            "{message}"
        );
        assert_eq!(
            server.app.plugin_calls("echo"),
            calls,
            "{field}: no plugin ran"
        );
        assert_eq!(server.stored().await, stored, "{field}: nothing stored");
    }

    // EngageLab's message_id.
    let limit = enrichd::engagelab::event::MAX_EVENT_ID_BYTES;
    let mut body: Value = serde_json::from_str(&fixture("delivered")).unwrap();
    body["message_id"] = json!("m".repeat(limit));
    assert_eq!(send(&server, &body.to_string()).await.status, 200);
    body["message_id"] = json!("m".repeat(limit + 1));
    let res = send(&server, &body.to_string()).await;
    assert_eq!(res.status, 400);
    let message = res.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("`message_id`") && message.contains(&limit.to_string()),
        "{message}"
    );
    let s = stats(&server).await;
    assert_eq!(
        (&s["engagelab"]["received"], &s["engagelab"]["refused"]),
        (&json!(1), &json!(1)),
        "only the one at the limit was queued"
    );
}
