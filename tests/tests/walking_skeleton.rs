//! Issue 2 (walking skeleton): an authenticated Emailgistics delivery runs
//! through a real WASM plugin chain on a real server and gets a merged,
//! validated envelope.

use enrichd_tests::{crm_sample, plugin_toml, seed_payload, TestServer, SECRET};
use serde_json::json;

const ROUTE: &str = "/emailgistics-webhook";

/// The example set-up: crm-enrich then keyword-router, with the sample CRM.
fn example_config(extra_chain: &str, extra_plugins: &str) -> String {
    format!(
        r#"
[[crm]]
name = "main"
kind = "embedded"
seed = {crm:?}

{crm_enrich}
{router}
{extra_plugins}
[[route]]
path = "{ROUTE}"
secrets = [{{ value = "{SECRET}" }}]
chain = [{{ plugin = "crm-enrich" }}, {extra_chain} {{ plugin = "keyword-router" }}]
"#,
        crm = crm_sample(),
        crm_enrich = plugin_toml("crm-enrich", &["log", "config", "crm"], ""),
        router = plugin_toml(
            "keyword-router",
            &["config"],
            "[plugin.config]\nrules = \"claim => Claims Desk; coverage, policy => Policy Desk\"",
        ),
    )
}

#[tokio::test]
async fn seed_payload_gets_crm_enriched_actions_in_plugin_order() {
    let server = TestServer::start(&example_config("", "")).await;
    let res = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(
        res.json(),
        json!({
            "status": "success",
            "message": "3 actions from crm-enrich (2), keyword-router (1)",
            "actions": [
                {"name": "Apply CRM context", "type": "setCustomFields",
                 "value": {"claimNumber": "CLM-556677", "policyNumber": "POL-889900", "region": "EMEA"}},
                {"name": "Tag VIP customers", "type": "tag", "value": {"tags": ["VIP"]}},
                {"name": "Route by keyword \"coverage\"", "type": "assign",
                 "value": {"mainAssignment": {"users": ["Policy Desk"], "ignoreMaxMessages": true}}}
            ]
        })
    );
}

#[tokio::test]
async fn unknown_sender_gets_no_crm_actions_but_routing_still_applies() {
    let server = TestServer::start(&example_config("", "")).await;
    let mut payload = seed_payload();
    payload["from"]["emailAddress"]["address"] = json!("stranger@nowhere.example");
    payload["sender"]["emailAddress"]["address"] = json!("stranger@nowhere.example");
    payload["subject"] = json!("New claim for my car");
    let body = server.deliver(ROUTE, &payload).await.json();
    assert_eq!(body["message"], "1 action from keyword-router (1)");
    assert_eq!(
        body["actions"][0]["value"]["mainAssignment"]["users"],
        json!(["Claims Desk"])
    );
}

#[tokio::test]
async fn wrong_missing_and_prefix_secrets_get_401_without_detail() {
    let server = TestServer::start(&example_config("", "")).await;
    let body = seed_payload().to_string();
    let prefix = format!("Bearer {}", &SECRET[..SECRET.len() - 1]);
    let longer = format!("Bearer {SECRET}x");
    let basic = format!("Basic {SECRET}");
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-secret")],
        vec![("Authorization", prefix.as_str())],
        vec![("Authorization", longer.as_str())],
        vec![("Authorization", basic.as_str())],
        vec![("Authorization", SECRET)],
    ] {
        let res = server.post(ROUTE, &headers, body.as_bytes()).await;
        assert_eq!(res.status, 401, "{headers:?}");
        assert!(res.body.is_empty(), "401 must not explain: {:?}", res.body);
        assert_eq!(res.header("www-authenticate"), Some("Bearer"));
    }
    // The scheme word is case-insensitive.
    let lower = format!("bearer {SECRET}");
    let res = server
        .post(ROUTE, &[("Authorization", &lower)], body.as_bytes())
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["status"], "success");
}

#[tokio::test]
async fn rotation_accepts_old_and_new_secrets_and_env_secrets() {
    std::env::set_var("ENRICHD_TEST_ROTATED_SECRET", "new-secret-from-env-42");
    let config = example_config("", "").replace(
        &format!("secrets = [{{ value = \"{SECRET}\" }}]"),
        &format!(
            "secrets = [{{ value = \"{SECRET}\" }}, {{ env = \"ENRICHD_TEST_ROTATED_SECRET\" }}]"
        ),
    );
    let server = TestServer::start(&config).await;
    let body = seed_payload().to_string();
    for token in [SECRET, "new-secret-from-env-42"] {
        let auth = format!("Bearer {token}");
        let res = server
            .post(ROUTE, &[("Authorization", &auth)], body.as_bytes())
            .await;
        assert_eq!(res.status, 200, "{token}");
    }
    let res = server
        .post(ROUTE, &[("Authorization", "Bearer other")], body.as_bytes())
        .await;
    assert_eq!(res.status, 401);
}

#[tokio::test]
async fn a_route_without_secrets_accepts_deliveries_without_a_header() {
    let config =
        example_config("", "").replace(&format!("secrets = [{{ value = \"{SECRET}\" }}]"), "");
    let server = TestServer::start(&config).await;
    let res = server
        .post(ROUTE, &[], seed_payload().to_string().as_bytes())
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["actions"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn unknown_event_is_acknowledged_and_ignored() {
    let server = TestServer::start(&example_config("", "")).await;
    let res = server
        .deliver(
            ROUTE,
            &json!({"event": "conversationClosed", "id": "x", "somethingNew": [1]}),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        json!({"status": "success", "message": "ignored"})
    );
}

#[tokio::test]
async fn unknown_fields_are_tolerated_and_optional_fields_may_be_absent() {
    let echo = plugin_toml("echo", &[], "");
    let config = format!(
        "{echo}\n[[route]]\npath = \"{ROUTE}\"\nsecrets = [{{ value = \"{SECRET}\" }}]\nchain = [{{ plugin = \"echo\" }}]\n"
    );
    let server = TestServer::start(&config).await;

    // Every documented field reaches the plugin, plus the raw body.
    let full = seed_payload();
    let res = server.deliver(ROUTE, &full).await.json();
    let seen = &res["actions"][0]["value"];
    assert_eq!(seen["id"], "65e0aaef382d2e93ed1ef9bc");
    assert_eq!(seen["event"], "received");
    assert_eq!(seen["mailbox"], "info@pinnilly.com");
    assert_eq!(seen["subject"], "Coverage");
    assert_eq!(seen["conversationId"], "2L8WYB89Z");
    assert_eq!(seen["from"], "Ren Storrie <rstorrie@pinnilly.com>");
    assert_eq!(seen["hasAttachments"], "false");
    assert_eq!(seen["customFieldCount"], "2");
    assert_eq!(seen["toCount"], "1");
    assert_eq!(seen["ccCount"], "0");
    assert_eq!(seen["rawLen"], full.to_string().len().to_string());

    // Unknown fields, top-level and nested, change nothing.
    // (Each variant gets its own id: the same id would be a replay.)
    let mut extra = full.clone();
    extra["id"] = json!("with-unknown-fields");
    extra["brandNewField"] = json!({"nested": true});
    extra["from"]["emailAddress"]["title"] = json!("Dr");
    let res = server.deliver(ROUTE, &extra).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["actions"][0]["value"]["subject"], "Coverage");

    // Conditional fields absent.
    let mut minimal = full;
    minimal["id"] = json!("without-optional-fields");
    for key in ["bodyText", "customFields"] {
        minimal.as_object_mut().unwrap().remove(key);
    }
    let res = server.deliver(ROUTE, &minimal).await.json();
    assert_eq!(res["actions"][0]["value"]["bodyText"], "<none>");
    assert_eq!(res["actions"][0]["value"]["customFieldCount"], "<none>");
}

#[tokio::test]
async fn malformed_json_and_wrong_types_get_400_with_a_json_error() {
    let server = TestServer::start(&example_config("", "")).await;
    let auth = format!("Bearer {SECRET}");
    let res = server
        .post(
            ROUTE,
            &[("Authorization", &auth)],
            b"{\"event\": \"received\",",
        )
        .await;
    assert_eq!(res.status, 400);
    let body = res.json();
    assert_eq!(body["status"], "error");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid payload"),
        "{body}"
    );

    let mut wrong = seed_payload();
    wrong["subject"] = json!(42);
    let res = server.deliver(ROUTE, &wrong).await;
    assert_eq!(res.status, 400);
    assert!(
        res.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{:?}",
        res.json()
    );

    let mut missing = seed_payload();
    missing.as_object_mut().unwrap().remove("conversationId");
    let res = server.deliver(ROUTE, &missing).await;
    assert_eq!(res.status, 400);
    assert!(res.json()["message"]
        .as_str()
        .unwrap()
        .contains("conversationId"));
}

#[tokio::test]
async fn oversized_bodies_get_413_and_the_server_keeps_serving() {
    let config = format!("max_body_bytes = 4096\n{}", example_config("", ""));
    let server = TestServer::start(&config).await;
    let auth = format!("Bearer {SECRET}");

    // Declared too large: refused from the headers, before any body byte.
    let head = format!(
        "POST {ROUTE} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 10000000\r\n\r\n"
    );
    let res = server.raw(head.as_bytes()).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(res.json()["message"].as_str().unwrap().contains("4096"));

    // Chunked, no length: refused once the limit is crossed.
    let mut chunked = format!(
        "POST {ROUTE} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..10 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(server.raw(&chunked).await.status, 413);

    // Exactly at the limit is accepted (padding with JSON whitespace).
    let mut body = seed_payload().to_string().into_bytes();
    body.resize(4096, b' ');
    let res = server.post(ROUTE, &[("Authorization", &auth)], &body).await;
    assert_eq!(res.status, 200);

    // And the server still serves normal deliveries.
    let res = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["actions"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn a_trapping_or_failing_plugin_is_skipped_and_the_rest_still_apply() {
    let extra_plugins = format!(
        "{}{}",
        plugin_toml("trap", &[], ""),
        plugin_toml("guest-error", &[], "")
    );
    let config = example_config(
        "{ plugin = \"trap\" }, { plugin = \"guest-error\" },",
        &extra_plugins,
    );
    let server = TestServer::start(&config).await;
    let res = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(res.status, 200);
    let body = res.json();
    assert_eq!(body["status"], "success");
    assert_eq!(
        body["message"],
        "3 actions from crm-enrich (2), keyword-router (1); failed: trap (trap), guest-error (guest error)"
    );
    let names: Vec<&str> = body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Apply CRM context",
            "Tag VIP customers",
            "Route by keyword \"coverage\""
        ]
    );
    // The host survived the trap: the next delivery (a new id, so the
    // plugins really run again) is served the same way.
    let mut next = seed_payload();
    next["id"] = json!("after-the-trap");
    let res = server.deliver(ROUTE, &next).await;
    assert_eq!(res.header("x-enrichd-replay"), None);
    assert_eq!(res.json(), body);
}

#[tokio::test]
async fn invalid_actions_are_dropped_and_long_values_truncated() {
    let every = plugin_toml("every-action", &[], "");
    let config = format!(
        "{every}\n[[route]]\npath = \"{ROUTE}\"\nchain = [{{ plugin = \"every-action\" }}]\n"
    );
    let server = TestServer::start(&config).await;
    let body = server.deliver(ROUTE, &seed_payload()).await.json();
    let actions = body["actions"].as_array().unwrap();
    let types: Vec<&str> = actions
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "assign",
            "tag",
            "setCustomFields",
            "sendMessage",
            "forwardMessage",
            "setCustomFields"
        ]
    );
    let long = actions[5]["value"]["longField"].as_str().unwrap();
    assert_eq!(long.chars().count(), 100);
    assert_eq!(
        body["message"],
        "6 actions from every-action (6); 3 invalid dropped"
    );
}

#[tokio::test]
async fn capabilities_are_denied_unless_granted() {
    let probe_all = plugin_toml("probe-capabilities", &["config", "crm", "log"], "");
    let probe_none = plugin_toml("probe-capabilities", &[], "")
        .replace("name = \"probe-capabilities\"", "name = \"probe-none\"");
    let config = format!(
        "[[crm]]\nname = \"main\"\nkind = \"embedded\"\nseed = {:?}\n{probe_all}{probe_none}\n[[route]]\npath = \"/all\"\nchain = [{{ plugin = \"probe-capabilities\" }}]\n\
         [[route]]\npath = \"/none\"\nchain = [{{ plugin = \"probe-none\" }}]\n",
        crm_sample()
    );
    let server = TestServer::start(&config).await;
    let granted = server.deliver("/all", &seed_payload()).await.json();
    assert_eq!(
        granted["actions"][0]["value"],
        json!({"config": "ok", "crm": "ok", "log": "ok"})
    );
    let denied = server.deliver("/none", &seed_payload()).await.json();
    assert_eq!(
        denied["actions"][0]["value"],
        json!({"config": "denied", "crm": "denied", "log": "denied"})
    );
}

#[tokio::test]
async fn a_chain_entry_limited_to_mailboxes_runs_only_for_them() {
    let config = example_config("", "").replace(
        "{ plugin = \"keyword-router\" }",
        "{ plugin = \"keyword-router\", mailboxes = [\"Claims@Pinnilly.com\"] }",
    );
    let server = TestServer::start(&config).await;
    let info = server.deliver(ROUTE, &seed_payload()).await.json();
    assert_eq!(info["message"], "2 actions from crm-enrich (2)");
    let mut claims = seed_payload();
    claims["id"] = json!("to-the-claims-mailbox");
    claims["mailbox"] = json!("claims@pinnilly.com");
    let claims = server.deliver(ROUTE, &claims).await.json();
    assert_eq!(
        claims["message"],
        "3 actions from crm-enrich (2), keyword-router (1)"
    );
}

#[tokio::test]
async fn methods_paths_and_health() {
    let server = TestServer::start(&example_config("", "")).await;
    let get = format!("GET {ROUTE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let res = server.raw(get.as_bytes()).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("POST"));
    let res = server.post("/elsewhere", &[], b"{}").await;
    assert_eq!(res.status, 404);
    let res = server
        .raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"status": "ok"}));
}
