//! Issue 9, plugin output: what a plugin's output makes the host spend.
//!
//! Each hostile output (the `hostile` test plugin's `fields`, `tags`,
//! `message`, `guest-error` and `flood` modes) runs between two
//! well-behaved plugins, on a real server with a real store. For each cap
//! there is an obeyed and a violated case: the delivery is answered within
//! the plugin's timeout + 10 %, the other plugins' actions still apply, the
//! record names the cap, and the envelope, the 503 body, the stored record
//! and the log stay under their documented bounds. The flood cases also
//! check that `/healthz` answers within 100 ms while two of them run.

use std::time::{Duration, Instant};

use enrichd::emailgistics::record::MAX_RECORD_BYTES;
use enrichd::plugin::policy::{
    DEFAULT_MAX_LIST_ITEMS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_NAME_BYTES,
};
use enrichd_tests::resources::{healthz_worst_during, log_capture};
use enrichd_tests::sandwich::{
    self, action_names, sandwich, seed_with_id, GOOD_AFTER, GOOD_BEFORE,
};
use enrichd_tests::TestServer;
use serde_json::{json, Value};

/// The hostile texts' default size.
const TWENTY_MIB: usize = 20 << 20;

/// The bar for /healthz while two flood deliveries run.
const HEALTHZ_BAR: Duration = Duration::from_millis(100);

/// The tests of this file measure latency and log bytes: one at a time, so
/// they do not compete for the two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A hostile plugin entry granted `config` and `log`.
fn hostile(name: &str, mode: &str, limits: &str, config: &str) -> String {
    sandwich::hostile(name, mode, &["log"], limits, config)
}

/// The good plugins' actions are first and last.
fn assert_sandwiched(body: &Value) {
    let names = action_names(body);
    assert_eq!(
        names.first().map(String::as_str),
        Some(GOOD_BEFORE),
        "{body}"
    );
    assert_eq!(names.last().map(String::as_str), Some(GOOD_AFTER), "{body}");
}

/// The stored record of delivery `id` on route `/<route>`.
async fn stored_record(server: &TestServer, route: &str, id: &str) -> Value {
    let res = server
        .admin_get(&format!("/deliveries/{id}?route=/{route}"))
        .await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    res.json()["record"].clone()
}

/// The hostile plugin's entry of a sandwich record.
fn hostile_entry(record: &Value) -> &Value {
    &record["plugins"][1]
}

fn json_len(v: &Value) -> usize {
    v.to_string().len()
}

/// Deliver `id` to `/<route>`; the answer and how long it took.
async fn timed(server: &TestServer, route: &str, id: &str) -> (enrichd_tests::Response, Duration) {
    let started = Instant::now();
    let res = server
        .deliver(&format!("/{route}"), &seed_with_id(id))
        .await;
    (res, started.elapsed())
}

/// Two deliveries of 90 000 items to `/<route>` at once: both answered
/// within the plugin's timeout + 10 %, the good plugins' actions kept, the
/// action dropped for the list cap, and /healthz fast meanwhile.
async fn two_floods_at_once(server: &TestServer, route: &str, timeout: Duration, reason: &str) {
    // Warm up (instantiation paths, the store) outside the measurement.
    server
        .deliver("/warm", &seed_with_id(&format!("{route}-warm")))
        .await;
    let (id1, id2) = (format!("{route}-1"), format!("{route}-2"));
    let ((a, b), worst, probes) = healthz_worst_during(server.addr, async {
        tokio::join!(timed(server, route, &id1), timed(server, route, &id2))
    })
    .await;
    for (i, (res, took)) in [a, b].into_iter().enumerate() {
        assert!(
            took <= timeout + timeout / 10,
            "{route} #{i}: answered after {took:?}, the plugin's timeout is {timeout:?}"
        );
        assert_eq!(res.status, 200);
        let body = res.json();
        assert_eq!(body["status"], "success", "{body}");
        assert_sandwiched(&body);
        assert_eq!(
            action_names(&body).len(),
            3,
            "only the good actions: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("1 invalid dropped"),
            "{body}"
        );
        let record = stored_record(server, route, &format!("{route}-{}", i + 1)).await;
        let dropped = &hostile_entry(&record)["dropped"][0];
        assert_eq!(
            dropped["reason"], reason,
            "the record names the cap: {record}"
        );
    }
    eprintln!("{route}: /healthz worst {worst:?} over {probes} probes");
    assert!(
        worst < HEALTHZ_BAR,
        "/healthz took {worst:?} (worst of {probes} probes) while two {route} deliveries ran"
    );
}

/// The `warm` route: the good plugins only.
fn warm_route() -> String {
    "[[route]]\npath = \"/warm\"\nchain = [{ plugin = \"crm-enrich\" }, { plugin = \"keyword-router\" }]\n"
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_thousand_custom_field_keys_are_refused_in_time_and_healthz_stays_fast() {
    let _serial = SERIAL.lock().await;
    // 90 000 keys are 1.16 MB of JSON, over the default 1 MiB output
    // limit: an action over a list cap is not counted (it never reaches the
    // envelope), so the list cap is what refuses it, not the byte limit.
    let limits = "timeout_ms = 5000";
    let server = TestServer::start(&format!(
        "{}{}",
        sandwich(
            "",
            &[
                ("keys90k", hostile("keys90k", "fields", limits, "")),
                (
                    "keys100",
                    hostile("keys100", "fields", limits, "count = \"100\""),
                ),
            ]
        ),
        warm_route()
    ))
    .await;
    two_floods_at_once(
        &server,
        "keys90k",
        Duration::from_secs(5),
        &format!(
            "setCustomFields: 90000 keys, more than max_list_items = {DEFAULT_MAX_LIST_ITEMS}"
        ),
    )
    .await;

    // Obeyed: 100 keys (the default cap) pass whole.
    let res = server.deliver("/keys100", &seed_with_id("keys100")).await;
    let body = res.json();
    assert_sandwiched(&body);
    let names = action_names(&body);
    assert_eq!(names.len(), 4, "{body}");
    assert_eq!(names[2], "fields", "{body}");
    let fields = body["actions"][2]["value"].as_object().unwrap();
    assert_eq!(fields.len(), DEFAULT_MAX_LIST_ITEMS);
    assert_eq!(fields["k99"], "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_thousand_tags_are_refused_in_time_and_healthz_stays_fast() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(&format!(
        "{}{}",
        sandwich(
            "",
            &[
                (
                    "tags90k",
                    hostile("tags90k", "tags", "timeout_ms = 5000", "")
                ),
                (
                    "tags100",
                    hostile("tags100", "tags", "timeout_ms = 5000", "count = \"100\""),
                ),
            ]
        ),
        warm_route()
    ))
    .await;
    two_floods_at_once(
        &server,
        "tags90k",
        Duration::from_secs(5),
        &format!("tag.tags: 90000 tags, more than max_list_items = {DEFAULT_MAX_LIST_ITEMS}"),
    )
    .await;

    let body = server
        .deliver("/tags100", &seed_with_id("tags100"))
        .await
        .json();
    assert_sandwiched(&body);
    let tags = body["actions"][2]["value"]["tags"].as_array().unwrap();
    assert_eq!(tags.len(), DEFAULT_MAX_LIST_ITEMS, "{body}");
}

#[tokio::test]
async fn a_900_kib_key_never_reaches_the_envelope_and_a_key_at_the_limit_does() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(&sandwich(
        "",
        &[
            (
                "longkey",
                hostile(
                    "longkey",
                    "fields",
                    "",
                    "count = \"1\"\nkey_len = \"921600\"",
                ),
            ),
            (
                "keyatlimit",
                hostile(
                    "keyatlimit",
                    "fields",
                    "",
                    &format!("count = \"1\"\nkey_len = \"{DEFAULT_MAX_NAME_BYTES}\""),
                ),
            ),
        ],
    ))
    .await;
    let res = server.deliver("/longkey", &seed_with_id("longkey")).await;
    assert_eq!(res.status, 200);
    assert!(
        res.body.len() < 4096,
        "the envelope is {} bytes: the key got through",
        res.body.len()
    );
    let body = res.json();
    assert_sandwiched(&body);
    assert_eq!(action_names(&body).len(), 3, "{body}");
    let record = stored_record(&server, "longkey", "longkey").await;
    assert!(json_len(&record) < 8192, "{record}");
    assert_eq!(
        hostile_entry(&record)["dropped"][0]["reason"],
        format!(
            "setCustomFields: key of entry 0: 921600 bytes, more than max_name_bytes = {DEFAULT_MAX_NAME_BYTES}"
        )
    );

    let body = server
        .deliver("/keyatlimit", &seed_with_id("keyatlimit"))
        .await
        .json();
    assert_sandwiched(&body);
    let fields = body["actions"][2]["value"].as_object().unwrap();
    let key = fields.keys().next().unwrap();
    assert_eq!(key.len(), DEFAULT_MAX_NAME_BYTES);
    assert!(key.starts_with("k0_"), "{key}");
}

#[tokio::test]
async fn a_20_mib_message_is_cut_everywhere_and_a_short_one_passes_unchanged() {
    let _serial = SERIAL.lock().await;
    let log = log_capture();
    let server = TestServer::start(&sandwich(
        "",
        &[
            ("bigmessage", hostile("bigmessage", "message", "", "")),
            (
                "msgatlimit",
                hostile(
                    "msgatlimit",
                    "message",
                    "",
                    &format!("bytes = \"{DEFAULT_MAX_MESSAGE_BYTES}\""),
                ),
            ),
            (
                "msgoverlimit",
                hostile(
                    "msgoverlimit",
                    "message",
                    "",
                    &format!("bytes = \"{}\"", DEFAULT_MAX_MESSAGE_BYTES + 1),
                ),
            ),
        ],
    ))
    .await;
    let res = server
        .deliver("/bigmessage", &seed_with_id("bigmessage"))
        .await;
    assert_eq!(res.status, 200);
    assert!(
        res.body.len() < 4096,
        "envelope of {} bytes",
        res.body.len()
    );
    let body = res.json();
    assert_sandwiched(&body);
    assert!(
        !body["message"].as_str().unwrap().contains("mmmm"),
        "{body}"
    );
    let record = stored_record(&server, "bigmessage", "bigmessage").await;
    assert!(
        json_len(&record) <= MAX_RECORD_BYTES,
        "{}",
        json_len(&record)
    );
    let kept = hostile_entry(&record)["message"].as_str().unwrap();
    assert!(kept.len() <= DEFAULT_MAX_MESSAGE_BYTES, "{}", kept.len());
    assert!(
        kept.starts_with("mmmm")
            && kept.ends_with(&format!(
                "… ({TWENTY_MIB} bytes, cut at max_message_bytes = {DEFAULT_MAX_MESSAGE_BYTES})"
            )),
        "the cut is marked: {kept:?}"
    );
    let logged = log.bytes_matching("bigmessage");
    assert!(
        logged < 16 * 1024,
        "{logged} bytes of log for one delivery with a 20 MiB message"
    );

    // Obeyed: a message at the limit is kept as written; one byte more is cut.
    server
        .deliver("/msgatlimit", &seed_with_id("msgatlimit"))
        .await;
    let record = stored_record(&server, "msgatlimit", "msgatlimit").await;
    assert_eq!(
        hostile_entry(&record)["message"],
        "m".repeat(DEFAULT_MAX_MESSAGE_BYTES)
    );
    server
        .deliver("/msgoverlimit", &seed_with_id("msgoverlimit"))
        .await;
    let record = stored_record(&server, "msgoverlimit", "msgoverlimit").await;
    let kept = hostile_entry(&record)["message"].as_str().unwrap();
    assert!(kept.ends_with(&format!(
        "({} bytes, cut at max_message_bytes = {DEFAULT_MAX_MESSAGE_BYTES})",
        DEFAULT_MAX_MESSAGE_BYTES + 1
    )));
}

#[tokio::test]
async fn a_20_mib_guest_error_is_cut_under_every_failure_policy() {
    let _serial = SERIAL.lock().await;
    let log = log_capture();
    let policy = |name: &str, on_error: &str| {
        (
            name.to_owned(),
            hostile(name, "guest-error", &format!("on_error = {on_error:?}"), ""),
        )
    };
    let cases = [
        policy("gerrskip", "skip"),
        policy("gerrerror", "error"),
        policy("gerrretry", "retry"),
        (
            "gerrshort".to_owned(),
            hostile("gerrshort", "guest-error", "", "bytes = \"40\""),
        ),
    ];
    let hostiles: Vec<(&str, String)> =
        cases.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let server = TestServer::start(&sandwich("", &hostiles)).await;
    let cut_marker =
        format!("… ({TWENTY_MIB} bytes, cut at max_message_bytes = {DEFAULT_MAX_MESSAGE_BYTES})");

    // skip: the chain goes on; the record keeps a cut, marked detail.
    let res = server.deliver("/gerrskip", &seed_with_id("gerrskip")).await;
    assert_eq!(res.status, 200);
    assert!(
        res.body.len() < 4096,
        "envelope of {} bytes",
        res.body.len()
    );
    let body = res.json();
    assert_sandwiched(&body);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .ends_with("failed: gerrskip (guest error)"));
    let record = stored_record(&server, "gerrskip", "gerrskip").await;
    assert!(json_len(&record) < 8192, "{}", json_len(&record));
    let failure = &hostile_entry(&record)["failure"];
    assert_eq!(failure["kind"], "guest");
    let detail = failure["detail"].as_str().unwrap();
    assert!(
        detail.len() <= DEFAULT_MAX_MESSAGE_BYTES,
        "{}",
        detail.len()
    );
    assert!(
        detail.starts_with("internal: xxxx") && detail.ends_with(&cut_marker),
        "{detail:?}"
    );

    // error: the error envelope's message is one bounded line.
    let res = server
        .deliver("/gerrerror", &seed_with_id("gerrerror"))
        .await;
    assert_eq!(res.status, 200);
    assert!(
        res.body.len() < 4096,
        "envelope of {} bytes",
        res.body.len()
    );
    let body = res.json();
    assert_eq!(body["status"], "error");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("plugin gerrerror failed (guest error): guest error: internal: xxxx"));
    let record = stored_record(&server, "gerrerror", "gerrerror").await;
    assert!(json_len(&record) < 8192, "{}", json_len(&record));

    // retry: the 503 body carries a bounded reason (and nothing is stored).
    let res = server
        .deliver("/gerrretry", &seed_with_id("gerrretry"))
        .await;
    assert_eq!(res.status, 503);
    assert!(
        res.body.len() < 4096,
        "503 body of {} bytes",
        res.body.len()
    );
    assert!(res.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("plugin gerrretry failed (guest error): guest error: internal: xxxx"));

    for name in ["gerrskip", "gerrerror", "gerrretry"] {
        let logged = log.bytes_matching(name);
        assert!(
            logged < 16 * 1024,
            "{name}: {logged} bytes of log for one delivery with a 20 MiB error"
        );
    }

    // Obeyed: a short error is kept as written.
    server
        .deliver("/gerrshort", &seed_with_id("gerrshort"))
        .await;
    let record = stored_record(&server, "gerrshort", "gerrshort").await;
    assert_eq!(
        hostile_entry(&record)["failure"]["detail"],
        format!("internal: {}", "x".repeat(40))
    );
}

/// A route running crm-enrich, `wide` plugins that each return one action
/// of 100 keys of 256 bytes, a flood of 100 actions with long values (one
/// note each), then keyword-router: a record of well over 64 KiB.
fn fat_record_config() -> String {
    let wide = |i: usize| {
        hostile(
            &format!("wide{i}"),
            "fields",
            "",
            &format!("count = \"100\"\nkey_len = \"{DEFAULT_MAX_NAME_BYTES}\""),
        )
    };
    let mut config = sandwich(
        "",
        &[("plain", hostile("plain", "fields", "", "count = \"3\""))],
    );
    for i in 0..3 {
        config.push_str(&wide(i));
    }
    config.push_str(&hostile(
        "noter",
        "flood",
        "",
        "count = \"100\"\nvalue_len = \"200\"",
    ));
    config.push_str(
        "[[route]]\npath = \"/fat\"\nchain = [{ plugin = \"crm-enrich\" }, { plugin = \"wide0\" }, { plugin = \"wide1\" }, { plugin = \"wide2\" }, { plugin = \"noter\" }, { plugin = \"keyword-router\" }]\n",
    );
    config
}

#[tokio::test]
async fn a_record_over_the_bound_is_stored_summarised_and_a_normal_one_whole() {
    let _serial = SERIAL.lock().await;
    let log = log_capture();
    let server = TestServer::start(&fat_record_config()).await;
    let first = server.deliver("/fat", &seed_with_id("fat")).await;
    assert_eq!(first.status, 200);
    let body = first.json();
    // The envelope is the answer: every action is in it.
    assert_eq!(
        action_names(&body).len(),
        2 + 3 + 100 + 1,
        "{}",
        body["message"]
    );

    let record = stored_record(&server, "fat", "fat").await;
    let bytes = json_len(&record);
    assert!(bytes <= MAX_RECORD_BYTES, "record of {bytes} bytes");
    let truncated = &record["truncated"];
    assert_eq!(truncated["maxBytes"], MAX_RECORD_BYTES);
    assert!(truncated["fullBytes"].as_u64().unwrap() > MAX_RECORD_BYTES as u64);
    assert_eq!(truncated["leftOut"]["notes"], 100, "{truncated}");
    let plugins = record["plugins"].as_array().unwrap();
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| p["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "crm-enrich",
            "wide0",
            "wide1",
            "wide2",
            "noter",
            "keyword-router"
        ]
    );
    for p in plugins {
        assert_eq!(p["outcome"], "applied", "{p}");
    }
    assert_eq!(plugins[4]["counts"]["notes"], 100);
    if truncated["leftOut"].get("actions").is_some() {
        assert_eq!(plugins[1]["counts"]["actions"], 1);
    }
    let logged = log.bytes_matching("/fat");
    assert!(
        logged <= MAX_RECORD_BYTES + 4096,
        "{logged} bytes logged for one delivery"
    );

    // The replay is the envelope, byte for byte, whatever the record kept.
    let replay = server.deliver("/fat", &seed_with_id("fat")).await;
    assert_eq!(replay.header("x-enrichd-replay"), Some("true"));
    assert_eq!(replay.body, first.body);

    // Obeyed: a normal record is stored whole.
    server.deliver("/plain", &seed_with_id("plain")).await;
    let record = stored_record(&server, "plain", "plain").await;
    assert!(record.get("truncated").is_none(), "{record}");
    let entry = hostile_entry(&record);
    assert_eq!(entry["actions"][0]["value"]["k2"], "v", "{record}");
}

#[tokio::test]
async fn per_plugin_overrides_of_the_caps_are_obeyed_and_violated() {
    let _serial = SERIAL.lock().await;
    let caps = "max_list_items = 5\nmax_name_bytes = 32\nmax_message_bytes = 128";
    let server = TestServer::start(&sandwich(
        "",
        &[
            ("five", hostile("five", "tags", caps, "count = \"5\"")),
            ("six", hostile("six", "tags", caps, "count = \"6\"")),
            (
                "key32",
                hostile("key32", "fields", caps, "count = \"1\"\nkey_len = \"32\""),
            ),
            (
                "key33",
                hostile("key33", "fields", caps, "count = \"1\"\nkey_len = \"33\""),
            ),
            (
                "msg128",
                hostile("msg128", "message", caps, "bytes = \"128\""),
            ),
            (
                "msg129",
                hostile("msg129", "message", caps, "bytes = \"129\""),
            ),
        ],
    ))
    .await;
    let hostile_actions = |body: &Value| action_names(body).len() - 3;
    for (route, kept, reason) in [
        ("five", 1, None),
        (
            "six",
            0,
            Some("tag.tags: 6 tags, more than max_list_items = 5"),
        ),
        ("key32", 1, None),
        (
            "key33",
            0,
            Some("setCustomFields: key of entry 0: 33 bytes, more than max_name_bytes = 32"),
        ),
    ] {
        let body = server
            .deliver(&format!("/{route}"), &seed_with_id(route))
            .await
            .json();
        assert_sandwiched(&body);
        assert_eq!(hostile_actions(&body), kept, "{route}: {body}");
        let record = stored_record(&server, route, route).await;
        let dropped = &hostile_entry(&record)["dropped"];
        match reason {
            Some(reason) => assert_eq!(dropped[0]["reason"], reason, "{record}"),
            None => assert_eq!(dropped, &json!([]), "{record}"),
        }
    }
    for (route, bytes) in [("msg128", 128), ("msg129", 129)] {
        server
            .deliver(&format!("/{route}"), &seed_with_id(route))
            .await;
        let record = stored_record(&server, route, route).await;
        let kept = hostile_entry(&record)["message"]
            .as_str()
            .unwrap()
            .to_owned();
        if bytes <= 128 {
            assert_eq!(kept, "m".repeat(bytes));
        } else {
            assert!(kept.len() <= 128, "{kept}");
            assert!(
                kept.ends_with("… (129 bytes, cut at max_message_bytes = 128)"),
                "{kept}"
            );
        }
    }
}

/// Plugin calls run off the async workers on a multi-threaded runtime
/// (`Plugin::call`): the deadline must still cut a guest that never
/// returns, and the workers stay free meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_the_workers_a_looping_plugin_is_still_cut_at_its_timeout() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(&format!(
        "{}{}",
        sandwich(
            "",
            &[("looper", hostile("looper", "loop", "timeout_ms = 2000", ""))]
        ),
        warm_route()
    ))
    .await;
    server.deliver("/warm", &seed_with_id("looper-warm")).await;
    let timeout = Duration::from_secs(2);
    let ((a, b), worst, probes) = healthz_worst_during(server.addr, async {
        tokio::join!(
            timed(&server, "looper", "looper-1"),
            timed(&server, "looper", "looper-2")
        )
    })
    .await;
    for (res, took) in [a, b] {
        assert!(took <= timeout + timeout / 10, "answered after {took:?}");
        let body = res.json();
        assert_sandwiched(&body);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .ends_with("failed: looper (timeout)"),
            "{body}"
        );
    }
    assert!(
        worst < HEALTHZ_BAR,
        "/healthz took {worst:?} (worst of {probes} probes) while two loops ran"
    );
}
