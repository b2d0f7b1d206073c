//! Issues 12 and 16: a Python plugin (componentize-py) and a JavaScript
//! plugin (ComponentizeJS), built from source by the tests
//! (`enrichd_tests::polyglot`), run through the real server in one chain
//! with the Rust `crm-enrich`, under the default (pooling) allocator and
//! with the minimum limits the README documents for each language.
//!
//! The toolchains come from `scripts/toolchains`; without them these tests
//! skip with a printed reason (a local `cargo test`), or fail under
//! `scripts/check` (`ENRICHD_REQUIRE_TOOLCHAINS=1`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use enrichd::plugin::inspect::Need;
use enrichd_tests::polyglot::{self, Built, Lang, Spec, JS, JS_LIMITS, PYTHON, PYTHON_LIMITS};
use enrichd_tests::{crm_sample, plugin_toml, plugin_toml_at, seed_payload, TestServer, SECRET};
use serde_json::{json, Value};

const ROUTE: &str = "/hook";

/// Servers start one at a time: the first compiles each 12–18 MB component
/// (minutes in a debug build) into the shared cache, the next loads it.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(config: &str) -> TestServer {
    let _one_at_a_time = STARTING.lock().await;
    TestServer::start(config).await
}

/// Both plugins built (or `None`: skipped, the reason printed).
fn built() -> Option<(Built, Built)> {
    let py = polyglot::toolchain(Lang::Python)?;
    let js = polyglot::toolchain(Lang::Js)?;
    Some((polyglot::build(PYTHON, &py), polyglot::build(JS, &js)))
}

/// `crm-enrich`, then the Python plugin, then the JS plugin, over the
/// sample CRM; `py_caps` and `js_caps` are what each is granted.
fn chain_config(py: &Path, js: &Path, py_caps: &[&str], js_caps: &[&str]) -> String {
    format!(
        "[[crm]]\nname = \"main\"\nkind = \"embedded\"\nseed = {crm:?}\n\n{crm_enrich}{triage}{router}\
         [[route]]\npath = \"{ROUTE}\"\nsecrets = [{{ value = \"{SECRET}\" }}]\n\
         chain = [{{ plugin = \"crm-enrich\" }}, {{ plugin = \"urgency-triage\" }}, {{ plugin = \"regional-router\" }}]\n",
        crm = crm_sample(),
        crm_enrich = plugin_toml("crm-enrich", &["log", "config", "crm"], ""),
        triage = plugin_toml_at(
            "urgency-triage",
            py,
            py_caps,
            &format!(
                "{PYTHON_LIMITS}\n[plugin.config]\nkeywords = \"coverage, outage\"\n\
                 escalate-to = \"oncall@example.com\""
            ),
        ),
        router = plugin_toml_at(
            "regional-router",
            js,
            js_caps,
            &format!(
                "{JS_LIMITS}\n[plugin.config]\nteams = \"EMEA => Ana Lund, bo@example.com; NA => Cy Park\"\n\
                 backup = \"Policy Desk\""
            ),
        ),
    )
}

/// The actions of the plugin `name` in the delivery record of `id`, and
/// its message.
async fn plugin_record(server: &TestServer, id: &str, name: &str) -> (Value, String) {
    let d = server.admin_get(&format!("/deliveries/{id}")).await.json();
    let plugins = d["record"]["plugins"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let p = plugins
        .into_iter()
        .find(|p| p["plugin"] == name)
        .unwrap_or_else(|| panic!("no record of {name} in {d}"));
    assert_eq!(p["outcome"], "applied", "{name}: {p}");
    let message = p["message"].as_str().unwrap_or("").to_owned();
    (p["actions"].clone(), message)
}

#[tokio::test]
async fn issue_12_python_and_js_plugins_run_in_the_chain_with_their_minimum_limits() {
    let Some((py, js)) = built() else { return };
    let started = Instant::now();
    let server = start(&chain_config(
        &py.path,
        &js.path,
        &["log", "config", "crm"],
        &["log", "config", "crm"],
    ))
    .await;
    let start_time = started.elapsed();
    assert_eq!(
        server.app.engine().allocator(),
        enrichd::plugin::AllocatorKind::Pooling,
        "the default allocator"
    );

    let res = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(res.status, 200);
    let body = res.json();
    let id = seed_payload()["id"].as_str().expect("id").to_owned();

    // The seed sender is a gold EMEA customer writing about "Coverage".
    let (triage, message) = plugin_record(&server, &id, "urgency-triage").await;
    assert_eq!(
        triage,
        json!([
            {"name": "Tag urgent mail", "type": "tag", "value": {"tags": ["Urgent"]}},
            {"name": "Set priority", "type": "setCustomFields", "value": {"Priority": "P1"}},
            {"name": "Escalate P1", "type": "forwardMessage", "value": {
                "toAddresses": [{"emailAddress": {"name": "", "address": "oncall@example.com"}}],
                "comment": "P1: coverage from a gold customer"}},
        ])
    );
    assert_eq!(message, "P1");
    let (router, message) = plugin_record(&server, &id, "regional-router").await;
    assert_eq!(
        router,
        json!([
            {"name": "Route to EMEA", "type": "assign", "value": {
                "mainAssignment": {"users": ["Ana Lund", "bo@example.com"]},
                "backupAssignments": [{"users": ["Policy Desk"]}, {"assignToAnyUser": true}]}},
            {"name": "Record region", "type": "setCustomFields", "value": {"Region": "EMEA"}},
        ])
    );
    assert_eq!(message, "routed by EMEA");
    // The envelope: crm-enrich's two actions, then the five above, in order.
    let names: Vec<&str> = body["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "Apply CRM context",
            "Tag VIP customers",
            "Tag urgent mail",
            "Set priority",
            "Escalate P1",
            "Route to EMEA",
            "Record region"
        ]
    );

    print_figures(&server, &py, &js, start_time).await;
}

/// Issue 16: each limit just below what an interpreter needs at start is
/// refused before compiling (no seconds spent), with one message naming
/// the plugin, the limit and the need, the same under both allocators.
#[tokio::test]
async fn issue_16_limits_below_what_python_and_js_need_are_one_error_at_start() {
    let Some((py, js)) = built() else { return };
    let cases = [
        (&py, "max_instances = 13", "14 core instances"),
        (
            &py,
            "max_table_elements = 5679",
            "a table of 5680 elements at start",
        ),
        (
            &py,
            "max_memory_bytes = 12845056",
            "a linear memory of 12910592 bytes at start",
        ),
        (&js, "max_instances = 3", "4 core instances"),
        (
            &js,
            "max_table_elements = 7696",
            "a table of 7697 elements at start",
        ),
        (
            &js,
            "max_memory_bytes = 9437184",
            "a linear memory of 9502720 bytes at start",
        ),
    ];
    for (plugin, limit, needs) in cases {
        let (key, value) = limit.split_once(" = ").expect("key = value");
        let expected = format!(
            "plugin \"small\": its component needs {needs}, above {limit}; raise {key} for this plugin"
        );
        for allocator in ["pooling", "on-demand"] {
            let config = format!(
                "allocator = {allocator:?}\n{}[[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"small\" }}]\n",
                plugin_toml_at("small", &plugin.path, &[], limit)
            );
            let started = Instant::now();
            let err = enrichd_tests::start_error(config).await;
            assert_eq!(
                err.as_deref(),
                Some(&*expected),
                "{allocator}, {key} = {value}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "refused before compiling: {:?}",
                started.elapsed()
            );
        }
    }
}

#[tokio::test]
async fn issue_12_python_and_js_plugins_fall_back_when_crm_and_config_are_denied() {
    let Some((py, js)) = built() else { return };
    // Python: neither config nor crm; JS: config but not crm.
    let server = start(&chain_config(&py.path, &js.path, &["log"], &["config"])).await;
    let res = server.deliver(ROUTE, &seed_payload()).await;
    assert_eq!(res.status, 200);
    let id = seed_payload()["id"].as_str().expect("id").to_owned();

    // Default keywords ("urgent, asap, …") miss "Coverage", no tier: P3.
    let (triage, message) = plugin_record(&server, &id, "urgency-triage").await;
    assert_eq!(
        triage,
        json!([{"name": "Set priority", "type": "setCustomFields", "value": {"Priority": "P3"}}])
    );
    assert!(
        message.starts_with("P3; config denied: ") && message.contains("; crm denied: "),
        "{message}"
    );
    // No region: the backup pool from config, then anyone.
    let (router, message) = plugin_record(&server, &id, "regional-router").await;
    assert_eq!(
        router,
        json!([
            {"name": "Route to unrouted", "type": "assign", "value": {
                "mainAssignment": {"users": ["Policy Desk"]},
                "backupAssignments": [{"assignToAnyUser": true}]}},
            {"name": "Record region", "type": "setCustomFields", "value": {"Region": "unrouted"}},
        ])
    );
    assert!(
        message.starts_with("routed by unrouted; crm denied: "),
        "{message}"
    );
}

#[tokio::test]
async fn issue_16_a_js_plugin_with_default_features_loads_with_http_denied() {
    let Some(tool) = polyglot::toolchain(Lang::Js) else {
        return;
    };
    let built = polyglot::build(
        Spec {
            default_features: true,
            ..JS
        },
        &tool,
    );

    // `plugin inspect`: its `wasi:http` imports are provided; what sends a
    // request is granted by `http`, and nothing is refused.
    let bytes = std::fs::read(&built.path).expect("built");
    let inspection = enrichd::plugin::inspect::inspect(&bytes).expect("a component");
    let http: Vec<_> = inspection
        .imports
        .iter()
        .filter(|i| i.name.starts_with("wasi:http/"))
        .collect();
    assert!(!http.is_empty(), "default features import wasi:http");
    assert!(
        !inspection
            .imports
            .iter()
            .any(|i| matches!(i.need, Need::Refused { .. })),
        "{:?}",
        inspection.imports
    );

    // `serve` loads it and runs it without granting `http`.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("enrichd.toml");
    let config = format!(
        "listen = \"127.0.0.1:0\"\ncache_dir = {:?}\n{}[[route]]\npath = \"{ROUTE}\"\n\
         secrets = [{{ value = \"{SECRET}\" }}]\nchain = [{{ plugin = \"regional-router\" }}]\n",
        enrichd_tests::SHARED_CACHE,
        plugin_toml_at("regional-router", &built.path, &["config"], JS_LIMITS),
    );
    std::fs::write(&path, config).expect("write config");
    let config = enrichd::config::Config::load(&path).expect("config is valid");
    let building = STARTING.lock().await;
    let app = enrichd::app::App::build(&config).await;
    drop(building);
    let app = app.unwrap_or_else(|e| panic!("a plugin importing wasi:http was refused: {e}"));
    assert!(app.plugins()[0].handles_deliveries());
}

#[test]
fn issue_12_python_and_js_plugins_pass_their_own_unit_tests() {
    if polyglot::toolchain(Lang::Python).is_some() {
        let out = polyglot::unit_tests(Lang::Python, PYTHON.name);
        assert!(out.contains("OK"), "{out}");
    }
    if polyglot::toolchain(Lang::Js).is_some() {
        let out = polyglot::unit_tests(Lang::Js, JS.name);
        assert!(out.contains("# fail 0"), "{out}");
    }
}

/// Sizes, build times and start time, and the median per-call time of each
/// plugin in the chain (debug build: orders of magnitude; the README's
/// figures come from a release `enrichd plugin run --json`).
async fn print_figures(server: &TestServer, py: &Built, js: &Built, start: std::time::Duration) {
    let rust = enrichd_tests::plugin_path("crm-enrich");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!("figures (debug test binary):");
    eprintln!("  server start with the chain: {start:?}");
    for (name, path, build) in [
        ("urgency-triage (Python)", &py.path, py.build_time),
        ("regional-router (JS)", &js.path, js.build_time),
        ("crm-enrich (Rust)", &rust, None),
    ] {
        eprintln!(
            "  {name}: {} bytes, build {}",
            size(path),
            build.map_or("cached".to_owned(), |d| format!("{d:?}"))
        );
    }
    let mut per_plugin: Vec<(String, Vec<u64>)> = Vec::new();
    for i in 0..9 {
        let mut p = seed_payload();
        let id = format!("figures-{i}");
        p["id"] = json!(id);
        assert_eq!(server.deliver(ROUTE, &p).await.status, 200);
        let d = server.admin_get(&format!("/deliveries/{id}")).await.json();
        for rec in d["record"]["plugins"].as_array().expect("plugins") {
            let name = rec["plugin"].as_str().unwrap_or("").to_owned();
            let us = rec["elapsed_us"].as_u64().unwrap_or(0);
            match per_plugin.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(us),
                None => per_plugin.push((name, vec![us])),
            }
        }
    }
    for (name, mut us) in per_plugin {
        us.sort_unstable();
        eprintln!(
            "  {name}: instantiate+call median {} µs over {}",
            us[us.len() / 2],
            us.len()
        );
    }
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir").to_path_buf();
                files.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    files.sort();
    files
}

/// Runs `cmd`, panicking with its output when it fails.
fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn issue_16_the_committed_typescript_declarations_are_those_jco_generates_from_the_wit() {
    let Some(tool) = polyglot::toolchain(Lang::Js) else {
        return;
    };
    let root = polyglot::root();
    let fresh = tempfile::tempdir().expect("temp dir");
    run(Command::new("node")
        .arg(root.join("plugins/js/wit-types.mjs"))
        .arg(&tool)
        .arg(root.join("wit/plugin.wit"))
        .arg(fresh.path()));
    let committed = tree(&root.join("templates/js/types"));
    let generated = tree(fresh.path());
    let names = |t: &[(PathBuf, Vec<u8>)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&generated),
        "files of templates/js/types"
    );
    for ((path, old), (_, new)) in committed.iter().zip(&generated) {
        assert!(
            old == new,
            "templates/js/types/{} is not what the WIT gives: regenerate with \
             `node plugins/js/wit-types.mjs target/toolchains/js wit/plugin.wit templates/js/types`",
            path.display()
        );
        // The template renders every file: no minijinja syntax in them.
        let text = String::from_utf8_lossy(old);
        assert!(
            !["{{", "{%", "{#"].iter().any(|m| text.contains(m)),
            "{}",
            path.display()
        );
    }
}

#[test]
fn issue_16_the_js_example_type_checks_against_the_committed_declarations() {
    let Some(tool) = polyglot::toolchain(Lang::Js) else {
        return;
    };
    let dir = polyglot::root().join("plugins/js").join(JS.name);
    run(Command::new(tool.join("node_modules/.bin/tsc"))
        .args(["-p", "jsconfig.json"])
        .current_dir(dir));
}

/// `enrichd plugin new vip-NAME --lang LANG`, then the project README's
/// build command with the test run's toolchain in place of its first-use
/// install (`link` → the toolchain), then `plugin run` on its payload.
fn new_project_builds_and_runs(lang: Lang, flag: &str, link: (&str, PathBuf), build: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("new-{flag}");
    let out = Command::new(enrichd_tests::enrichd_bin!())
        .args(["plugin", "new", &name, "--lang", flag, "--dir"])
        .arg(dir.path())
        .output()
        .expect("run plugin new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join(&name);
    std::os::unix::fs::symlink(&link.1, project.join(link.0)).expect("link the toolchain");
    let built = Command::new(build[0])
        .args(&build[1..])
        .current_dir(&project)
        .output()
        .expect("run the build");
    assert!(
        built.status.success(),
        "{lang:?}: {}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(enrichd_tests::enrichd_bin!())
        .args(["plugin", "run", "--json", "--payload", "payload.json"])
        .arg(format!("{name}.wasm"))
        .args(["--grant", "log,config", "--config", "keywords=coverage"])
        .args(["--cache-dir", enrichd_tests::SHARED_CACHE])
        .current_dir(&project)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run plugin run");
    let json: Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&run.stderr)));
    assert_eq!(run.status.code(), Some(0), "{lang:?}: {json}");
    assert_eq!(json["plugin"]["outcome"], "applied", "{lang:?}: {json}");
    assert_eq!(json["answer"]["status"], 200, "{lang:?}: {json}");
}

#[test]
fn issue_12_new_python_project_builds_and_runs() {
    let Some(tool) = polyglot::toolchain(Lang::Python) else {
        return;
    };
    // componentize-py is `<venv>/bin/componentize-py`.
    let venv = tool
        .parent()
        .and_then(Path::parent)
        .expect("a venv")
        .to_path_buf();
    new_project_builds_and_runs(Lang::Python, "python", (".venv", venv), &["./build.sh"]);
}

#[test]
fn issue_12_new_js_project_builds_and_runs() {
    let Some(tool) = polyglot::toolchain(Lang::Js) else {
        return;
    };
    new_project_builds_and_runs(
        Lang::Js,
        "js",
        ("node_modules", tool.join("node_modules")),
        &["npm", "run", "build"],
    );
}
