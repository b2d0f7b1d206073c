//! Issue 15: the OpenAPI document (`openapi/enrichd.yaml`) stays true.
//!
//! - The admin listener serves it at `/openapi.json`, equal to the file.
//! - Every path the server answers is in it, and every path in it is
//!   answered.
//! - schemathesis (pinned by `tests/schemathesis/requirements.txt`,
//!   installed by `scripts/toolchains`) runs against a live server with real
//!   plugins, for the public routes (the bearer secret; EngageLab signed by
//!   `tests/schemathesis/hooks.py`) and the admin ones (the admin token):
//!   every response must conform to the document (status code, content
//!   type, headers, schema), none may be a 5xx or a dropped connection, and
//!   every request the document calls valid must be accepted.
//!   Without schemathesis the test skips with the reason, unless
//!   `ENRICHD_REQUIRE_TOOLCHAINS=1` (`scripts/check`), where it fails.

use std::path::PathBuf;
use std::process::Command;

use enrichd::admin::openapi::{ADMIN_PATHS, OPENAPI_PATH};
use enrichd::http::HEALTHZ_PATH;
use enrichd_tests::polyglot::root;
use enrichd_tests::{get, plugin_toml, raw_request, seed_payload, TestServer, SECRET};
use serde_json::Value;

const ROUTE: &str = "/emailgistics-webhook";
const EVENTS: &str = "/engagelab-webhook";
const APP_KEY: &str = "openapi-test-app-key";
const ADMIN_TOKEN: &str = "openapi-test-admin-token";
/// Examples per operation and phase: enough for schemathesis to try every
/// documented shape and the obvious invalid ones, while a run stays well
/// under a minute on two cores.
const MAX_EXAMPLES: &str = "50";
/// Fixed, so a failure reproduces.
const SEED: &str = "15";

/// The document as written.
fn document() -> Value {
    let path = root().join("openapi/enrichd.yaml");
    let text = std::fs::read_to_string(&path).expect("read openapi/enrichd.yaml");
    serde_norway::from_str(&text).expect("openapi/enrichd.yaml is YAML")
}

/// keyword-router and every-action (which answers every action type) on the
/// Emailgistics route, the engagement tracker on the EngageLab route, and
/// an admin token.
fn config() -> String {
    format!(
        "admin_token = {{ value = \"{ADMIN_TOKEN}\" }}\n{}{}{}\
         [[route]]\npath = \"{ROUTE}\"\nsecrets = [{{ value = \"{SECRET}\" }}]\n\
         chain = [{{ plugin = \"keyword-router\" }}, {{ plugin = \"every-action\" }}]\n\
         [[engagelab]]\npath = \"{EVENTS}\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\n\
         chain = [{{ plugin = \"engagement-tracker\" }}]\n",
        plugin_toml(
            "keyword-router",
            &["log", "config"],
            "[plugin.config]\nrules = \"coverage, policy => Policy Desk\"\nbackup = \"any\"",
        ),
        plugin_toml("every-action", &[], ""),
        plugin_toml("engagement-tracker", &["kv", "log"], ""),
    )
}

/// A GET with the admin token.
async fn admin_get(server: &TestServer, path: &str) -> enrichd_tests::Response {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    raw_request(server.admin_addr, req.as_bytes()).await
}

#[tokio::test]
async fn issue_15_openapi_json_is_served_and_equals_the_file() {
    let server = TestServer::start(&config()).await;
    let res = admin_get(&server, OPENAPI_PATH).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.json(), document());
    // It is an admin page: the token guards it.
    assert_eq!(get(server.admin_addr, OPENAPI_PATH).await.status, 401);
}

/// Every path either listener answers is in the document, and every
/// documented path is answered (not 404) on its listener.
#[tokio::test]
async fn issue_15_every_route_is_in_the_document_and_every_documented_route_answers() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    let public = [HEALTHZ_PATH, ROUTE, EVENTS];
    for path in public.iter().chain(ADMIN_PATHS) {
        assert!(paths.contains_key(*path), "{path} is not in the document");
    }
    let server = TestServer::start(&config()).await;
    for (path, item) in paths {
        let tags = item
            .as_object()
            .into_iter()
            .flat_map(|ops| ops.values())
            .flat_map(|op| op["tags"].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>();
        let concrete = path.replace("{id}", "no-such-id");
        if tags.iter().any(|t| t == "public") {
            assert!(
                public.contains(&path.as_str()),
                "{path}: not a public route"
            );
            let res = get(server.addr, &concrete).await;
            assert_ne!(
                res.status,
                404,
                "public {path}: {}",
                String::from_utf8_lossy(&res.body)
            );
        }
        if tags.iter().any(|t| t == "admin") {
            assert!(
                ADMIN_PATHS.contains(&path.as_str()),
                "{path}: not in ADMIN_PATHS"
            );
            let res = admin_get(&server, &concrete).await;
            let body = String::from_utf8_lossy(&res.body);
            // `/deliveries/{id}` of an unknown id is a 404 with a reason, not
            // "no such endpoint".
            assert!(
                res.status != 404 || !body.contains("no such"),
                "admin {path}: {} {body}",
                res.status,
            );
        }
    }
}

/// The schemathesis binary, or `None` after saying why the test skips.
fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("ENRICHD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/toolchains/schemathesis/bin/schemathesis"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "schemathesis is missing (no {}, from ENRICHD_SCHEMATHESIS or the default): \
         ./scripts/check installs it (scripts/toolchains)",
        path.display()
    );
    assert!(
        std::env::var("ENRICHD_REQUIRE_TOOLCHAINS").as_deref() != Ok("1"),
        "{why}"
    );
    eprintln!("skipping: {why}");
    None
}

/// Run schemathesis on the operations tagged `tag` at `base`, sending
/// `header`; panics with its output unless every check passed.
fn run_schemathesis(st: &std::path::Path, base: &str, tag: &str, header: &str) {
    let report = tempfile::tempdir().expect("report dir");
    let out = Command::new(st)
        .args(["--config-file", "tests/schemathesis/schemathesis.toml"])
        .args(["run", "openapi/enrichd.yaml", "--url", base])
        .args(["--include-tag", tag, "--header", header])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--generation-deterministic", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // Every check but one: the answers conform to the document (status,
        // content type, headers, schema), no 5xx, valid requests accepted,
        // other methods answered 405 with `Allow`, auth not ignored. Not
        // `negative_data_rejection`: JSON Schema counts characters where
        // enrichd's limits count bytes, and enrichd accepts on purpose what
        // senders send outside their own docs (an unknown event, a number
        // where EngageLab documents a string), so "invalid" requests that
        // get a 200 are by design.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "negative_data_rejection",
        ])
        .args(["--request-timeout", "10", "--no-color"])
        .arg("--report-dir")
        .arg(report.path())
        .current_dir(root())
        .env(
            "SCHEMATHESIS_HOOKS",
            root().join("tests/schemathesis/hooks.py"),
        )
        .env("ENRICHD_ENGAGELAB_APP_KEY", APP_KEY)
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis on {tag}:\n{text}");
    eprintln!("{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_schemathesis_finds_every_answer_true_to_the_document() {
    let Some(st) = schemathesis() else { return };
    let server = TestServer::start(&config()).await;
    // One stored delivery, so the admin pages have a record to show.
    assert_eq!(server.deliver(ROUTE, &seed_payload()).await.status, 200);
    let public = format!("http://{}", server.addr);
    let admin = format!("http://{}", server.admin_addr);
    let bearer = format!("Authorization: Bearer {SECRET}");
    let admin_bearer = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let ran = tokio::task::spawn_blocking(move || {
        run_schemathesis(&st, &public, "public", &bearer);
        run_schemathesis(&st, &admin, "admin", &admin_bearer);
    })
    .await;
    if let Err(e) = ran {
        std::panic::resume_unwind(e.into_panic());
    }
    // The runs got past authentication: signed callbacks were queued and
    // generated deliveries answered (else only the 401s were checked).
    let stats = admin_get(&server, "/stats").await.json();
    assert!(stats["engagelab"]["received"].as_u64() > Some(0), "{stats}");
    assert!(stats["deliveries"].as_u64() > Some(1), "{stats}");
}
