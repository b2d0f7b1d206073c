//! Issue 14: structured logs. The real binary runs with `--log-format json`
//! (or text, or no flag on a piped stderr) and its stderr lines are read
//! back: every line logged while a delivery is handled carries the
//! delivery's `route` and id in its `delivery` span, also with another
//! delivery running at the same time; the configured bearer secret and
//! EngageLab app key appear nowhere.

use std::time::Duration;

use enrichd_tests::process::{engagelab_example, eventually, Host};
use enrichd_tests::sandwich::seed_with_id;
use enrichd_tests::{enrichd_bin, plugin_toml_as, SECRET};
use serde_json::Value;

const HOOK: &str = "/hook";
const EVENTS: &str = "/engagelab-webhook";
const APP_KEY: &str = "logs-test-app-key-0a1b2c";
/// Lines `loud` logs per call; its `max_log_lines` keeps 2, and the host
/// notes the rest.
const LOUD_LINES: usize = 5;

/// `loud` logs more than its budget (so the host adds its note), then
/// `counter` logs its run and spins long enough for two deliveries to
/// overlap; an EngageLab route with its app key.
fn config() -> String {
    format!(
        "{}{}{}\
         [[route]]\npath = \"{HOOK}\"\nsecrets = [{{ value = \"{SECRET}\" }}]\n\
         chain = [{{ plugin = \"loud\" }}, {{ plugin = \"counter\" }}]\n\
         [[engagelab]]\npath = \"{EVENTS}\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\n\
         chain = [{{ plugin = \"event-counter\" }}]\n",
        plugin_toml_as(
            "loud",
            "hostile",
            &["config", "log"],
            &format!(
                "max_log_lines = 2\n[plugin.config]\nmode = \"log\"\nlines = \"{LOUD_LINES}\""
            ),
        ),
        plugin_toml_as(
            "counter",
            "hostile",
            &["config", "kv", "log"],
            "[plugin.config]\nmode = \"count\"\nms = \"400\"",
        ),
        plugin_toml_as(
            "event-counter",
            "hostile",
            &["config", "kv", "log"],
            "[plugin.config]\nmode = \"count\"",
        ),
    )
}

/// Every line of the host's log as JSON.
///
/// # Panics
/// When a line is not JSON.
fn json_lines(host: &Host) -> Vec<Value> {
    host.log_lines("")
        .iter()
        .filter(|l| !l.starts_with("--- "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The lines whose event says `delivery = id` (the plugin runtime's lines
/// and the delivery record name it themselves).
fn lines_about(lines: &[Value], id: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["fields"]["delivery"] == id)
        .cloned()
        .collect()
}

/// Waits for `id`'s delivery record line (written just before its answer).
async fn record_logged(host: &Host, id: &str) {
    let needle = format!("\"delivery\":\"{id}\"");
    eventually(
        "the delivery record is logged",
        Duration::from_secs(10),
        || {
            let found = host
                .log_lines(&needle)
                .iter()
                .any(|l| l.contains("enrichd::delivery"));
            async move { found.then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn issue_14_every_line_about_a_delivery_carries_its_id_and_route() {
    let host = Host::start_logging(enrichd_bin!(), "A", &config(), Some("json")).await;
    // Two at once: their plugin calls overlap (`counter` spins 400 ms).
    let (a, b) = (seed_with_id("delivery-a"), seed_with_id("delivery-b"));
    let (a, b) = tokio::join!(host.deliver(HOOK, &a), host.deliver(HOOK, &b));
    assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
    record_logged(&host, "delivery-a").await;
    record_logged(&host, "delivery-b").await;
    let lines = json_lines(&host);
    for id in ["delivery-a", "delivery-b"] {
        let about = lines_about(&lines, id);
        let count = |pred: &dyn Fn(&Value) -> bool| about.iter().filter(|l| pred(l)).count();
        // The plugin's `log` lines, the host's note on what its budget
        // dropped, the counter's line and the delivery record.
        let guest = |l: &Value| l["target"] == "enrichd::guest";
        assert_eq!(
            count(&|l| guest(l)
                && l["fields"]["plugin"] == "loud"
                && l["fields"]["source"].is_null()),
            2,
            "{about:#?}"
        );
        assert_eq!(
            count(&|l| guest(l) && l["fields"]["source"] == "host"),
            1,
            "{about:#?}"
        );
        assert_eq!(
            count(&|l| guest(l) && l["fields"]["plugin"] == "counter"),
            1,
            "{about:#?}"
        );
        assert_eq!(
            count(&|l| l["target"] == "enrichd::delivery"),
            1,
            "{about:#?}"
        );
        for line in &about {
            // The span's fields are on each line: its own id, not the
            // other delivery's, and the route.
            assert_eq!(line["span"]["name"], "delivery", "{line}");
            assert_eq!(line["span"]["delivery"], id, "{line}");
            assert_eq!(line["span"]["route"], HOOK, "{line}");
            assert_eq!(line["spans"][0]["delivery"], id, "{line}");
        }
    }
    // Nothing logged in a delivery's span is about another one.
    for line in lines.iter().filter(|l| !l["span"]["delivery"].is_null()) {
        let own = &line["fields"]["delivery"];
        assert!(own.is_null() || *own == line["span"]["delivery"], "{line}");
    }
}

#[tokio::test]
async fn issue_14_secrets_and_app_keys_never_appear_in_the_log() {
    let host = Host::start_logging(enrichd_bin!(), "A", &config(), Some("json")).await;
    // A near miss of the secret is no less secret (a typo, an old one).
    let near_miss = format!("{SECRET}x");
    for secret in [near_miss.as_str(), SECRET] {
        let auth = format!("Bearer {secret}");
        let body = seed_with_id(&format!("secret-{}", secret.len())).to_string();
        host.post(HOOK, &[("Authorization", &auth)], body.as_bytes())
            .await;
    }
    let callback = engagelab_example("open");
    let refused = host.callback(EVENTS, "not-the-app-key", &callback).await;
    assert_eq!(refused.expect("an answer").status, 401);
    let accepted = host.callback(EVENTS, APP_KEY, &callback).await;
    assert_eq!(accepted.expect("an answer").status, 200);
    record_logged(&host, &format!("secret-{}", SECRET.len())).await;
    // The queued callback is processed in its `event` span.
    let event = eventually("the callback is processed", Duration::from_secs(10), || {
        let line = json_lines(&host)
            .into_iter()
            .find(|l| l["target"] == "enrichd::event");
        async move { line }
    })
    .await;
    assert_eq!(event["span"]["name"], "event", "{event}");
    assert_eq!(event["span"]["route"], EVENTS, "{event}");
    assert_eq!(event["span"]["seq"], event["fields"]["seq"], "{event}");
    let counted = json_lines(&host)
        .into_iter()
        .find(|l| l["target"] == "enrichd::guest" && l["fields"]["plugin"] == "event-counter")
        .expect("the event plugin's line");
    assert_eq!(counted["span"]["seq"], event["fields"]["seq"], "{counted}");
    let refusals = host.log_lines("refused: 401");
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    let log = host.log_lines("").join("\n");
    for secret in [SECRET, near_miss.as_str(), APP_KEY, "not-the-app-key"] {
        assert!(!log.contains(secret), "{secret:?} logged:\n{log}");
    }
}

#[tokio::test]
async fn issue_14_text_on_request_json_by_default_on_a_pipe() {
    let text = Host::start_logging(enrichd_bin!(), "text", &config(), Some("text")).await;
    text.deliver(HOOK, &seed_with_id("text-1")).await;
    let mut record = Vec::new();
    eventually("the record is logged", Duration::from_secs(10), || {
        record = text.log_lines("enrichd::delivery");
        let found = !record.is_empty();
        async move { found.then_some(()) }
    })
    .await;
    let line = &record[0];
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(
        line.contains(&format!("delivery{{route={HOOK} delivery=\"text-1\"}}")),
        "{line}"
    );
    drop(text);
    // No flag, stderr a pipe: JSON.
    let default = Host::start_logging(enrichd_bin!(), "default", &config(), None).await;
    default.deliver(HOOK, &seed_with_id("default-1")).await;
    record_logged(&default, "default-1").await;
    let lines = json_lines(&default);
    assert!(lines
        .iter()
        .any(|l| l["fields"]["message"] == "enrichd listening"));
}
