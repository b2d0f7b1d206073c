//! `enrichd plugin inspect` (issue 12) on the real binary: the first-party
//! plugins and test plugins built from source, components made by hand for
//! what no plugin here does (import `wasi:http`, build against 0.1.0), and
//! files that are not plugins.

use std::path::Path;
use std::process::{Command, Output};

use enrichd_tests::{enrichd_bin, plugin_path};
use sha2::{Digest, Sha256};

/// Run `enrichd plugin inspect` with `args`.
fn inspect(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(enrichd_bin!())
        .args(["plugin", "inspect"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run enrichd plugin inspect")
}

/// `--json` on `file`, which must succeed.
fn inspect_json(file: &Path) -> serde_json::Value {
    let out = inspect(&["--json".as_ref(), file.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The text output on `file`, which must succeed.
fn inspect_text(file: &Path) -> String {
    let out = inspect(&[file.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `inspect` on `bytes` (in a temp file) fails with exit status 1 and a
/// message containing `needle`.
fn assert_refused(bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("plugin.wasm");
    std::fs::write(&file, bytes).expect("write");
    let out = inspect(&[file.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

/// A component that imports each of `imports` as an (empty) instance and
/// exports the first of them under each name of `exports`: enough for the
/// import and export sections inspect reads.
fn component(imports: &[&str], exports: &[&str]) -> Vec<u8> {
    fn section(out: &mut Vec<u8>, id: u8, items: &[&str], item: &[u8]) {
        let mut body = vec![items.len() as u8];
        for name in items {
            body.extend_from_slice(&[0x00, name.len() as u8]);
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(item);
        }
        out.push(id);
        out.push(body.len() as u8);
        out.extend_from_slice(&body);
    }
    let mut c = b"\0asm\x0d\0\x01\0".to_vec();
    // Type section: one empty instance type.
    c.extend_from_slice(&[7, 3, 1, 0x42, 0x00]);
    // Imports: instance of type 0. Exports: instance 0, no ascribed type.
    section(&mut c, 10, imports, &[0x05, 0x00]);
    section(&mut c, 11, exports, &[0x05, 0x00, 0x00]);
    c
}

#[test]
fn issue_12_inspect_crm_enrich_names_its_world_grants_pin_and_version() {
    let file = plugin_path("crm-enrich");
    let bytes = std::fs::read(&file).expect("read");
    let sha = hex::encode(Sha256::digest(&bytes));

    let json = inspect_json(&file);
    assert_eq!(json["world"], "delivery");
    assert_eq!(json["wit_world"], "delivery-plugin");
    assert_eq!(strings(&json["capabilities"]), ["config", "crm", "log"]);
    assert_eq!(strings(&json["exports"]), ["enrichd:plugin/handler@0.2.0"]);
    assert_eq!(json["sha256"], sha.as_str());
    assert_eq!(json["size_bytes"], bytes.len() as u64);
    assert_eq!(json["wit_version"], "0.2.0");
    assert_eq!(json["wit_supported"], true);
    assert_eq!(json["supported_wit_version"], "0.2.0");
    assert_eq!(json["loadable"], true);
    let imports = json["imports"].as_array().expect("imports");
    let crm = imports
        .iter()
        .find(|i| i["name"] == "enrichd:plugin/crm@0.2.0")
        .expect("imports crm");
    assert_eq!(crm["kind"], "enrichd");
    assert_eq!(crm["capability"], "crm");
    assert_eq!(crm["provided"], true);
    let wasi: Vec<_> = imports.iter().filter(|i| i["kind"] == "wasi").collect();
    assert!(!wasi.is_empty(), "a wasip2 build imports WASI");
    assert!(wasi.iter().all(
        |i| i["provided"] == true && i["name"].as_str().is_some_and(|n| n.starts_with("wasi:"))
    ));

    let text = inspect_text(&file);
    assert!(text.contains("delivery plugin (delivery-plugin)"), "{text}");
    assert!(text.contains(&format!("sha256 = \"{sha}\"")), "{text}");
    assert!(
        text.contains("capabilities = [\"config\", \"crm\", \"log\"]"),
        "{text}"
    );
    assert!(text.contains("enrichd:plugin@0.2.0 (supported)"), "{text}");
    assert!(text.contains(&format!("{} bytes", bytes.len())), "{text}");
}

/// Issue 16: inspect prints the footprint, the smallest limits the
/// component runs under; `serve` refuses anything below them at start.
#[test]
fn issue_16_inspect_prints_the_smallest_limits_a_component_runs_under() {
    let file = plugin_path("crm-enrich");
    let json = inspect_json(&file);
    let f = &json["footprint"];
    // A Rust wasip2 component: the main module, wit-component's shim and
    // fixup modules; one memory; the function table and the shim's.
    assert_eq!(
        (&f["core_instances"], &f["memories"], &f["tables"]),
        (&3.into(), &1.into(), &2.into()),
        "{f}"
    );
    assert_eq!(json["min_limits"]["max_instances"], 3);
    let memory = f["memory_bytes"].as_u64().expect("memory_bytes");
    assert!(memory > 0 && memory.is_multiple_of(65536), "{f}");
    assert_eq!(json["min_limits"]["max_memory_bytes"], memory);
    let text = inspect_text(&file);
    assert!(
        text.contains(&format!(
            "needs        max_instances >= 3 (core instances 3, memories 1, tables 2), max_memory_bytes >= {memory}, max_table_elements >= {}",
            f["table_elements"]
        )),
        "{text}"
    );
}

#[test]
fn issue_12_inspect_lists_only_the_capabilities_each_plugin_imports() {
    let json = inspect_json(&plugin_path("keyword-router"));
    assert_eq!(json["world"], "delivery");
    assert_eq!(strings(&json["capabilities"]), ["config"]);
}

#[test]
fn issue_12_inspect_tells_event_and_both_worlds_apart() {
    let json = inspect_json(&plugin_path("event-echo"));
    assert_eq!(json["world"], "event");
    assert_eq!(strings(&json["exports"]), ["enrichd:plugin/events@0.2.0"]);
    let json = inspect_json(&plugin_path("hostile"));
    assert_eq!(json["world"], "both");
    assert_eq!(
        strings(&json["capabilities"]),
        ["config", "crm", "kv", "log"]
    );
}

#[test]
fn issue_12_inspect_maps_wasi_http_requests_to_the_http_capability() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("js.wasm");
    std::fs::write(
        &file,
        component(
            &[
                "wasi:http/outgoing-handler@0.2.3",
                "wasi:http/types@0.2.3",
                "enrichd:plugin/kv@0.2.0",
            ],
            &["enrichd:plugin/handler@0.2.0"],
        ),
    )
    .expect("write");
    let json = inspect_json(&file);
    assert_eq!(json["loadable"], true);
    assert_eq!(strings(&json["capabilities"]), ["http", "kv"]);
    let http = &json["imports"][0];
    assert_eq!(http["capability"], "http");
    assert_eq!(http["provided"], true);
    // Its types alone (a ComponentizeJS default build) need no grant.
    assert_eq!(json["imports"][1]["kind"], "wasi");
    assert!(json["imports"][1].get("capability").is_none());
    let text = inspect_text(&file);
    assert!(text.contains("capability `http`"), "{text}");
}

#[test]
fn issue_12_inspect_flags_a_plugin_built_against_0_1_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("old.wasm");
    std::fs::write(
        &file,
        component(
            &["enrichd:plugin/log@0.1.0"],
            &["enrichd:plugin/handler@0.1.0"],
        ),
    )
    .expect("write");
    let json = inspect_json(&file);
    assert_eq!(json["world"], "delivery");
    assert_eq!(json["wit_version"], "0.1.0");
    assert_eq!(json["wit_supported"], false);
    assert_eq!(json["loadable"], false);
    assert!(json["imports"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("rebuild")));
    assert!(inspect_text(&file).contains("enrichd:plugin@0.1.0 (NOT supported"));
}

#[test]
fn issue_12_inspect_refuses_what_is_not_a_plugin_component() {
    assert_refused(b"[workspace]\n", "not a WebAssembly component");
    assert_refused(
        b"\0asm\x01\0\0\0",
        "a core WebAssembly module, not a component",
    );
    assert_refused(
        &component(&["wasi:cli/run@0.2.0"], &["wasi:cli/run@0.2.0"]),
        "not an enrichd plugin",
    );
    let out = inspect(&["/nonexistent/plugin.wasm".as_ref()]);
    assert_eq!(out.status.code(), Some(1));
}

/// `enrichd plugin run FILE --payload <seed> --json` with `args`.
fn run_json(file: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed-payload.json");
    let out = Command::new(enrichd_bin!())
        .args(["plugin", "run", "--json", "--payload", seed])
        .arg(file)
        .args(["--cache-dir", enrichd_tests::SHARED_CACHE])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run enrichd plugin run");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.code(), json)
}

#[test]
fn issue_12_run_keyword_router_prints_its_actions_and_answer() {
    let (code, json) = run_json(
        &plugin_path("keyword-router"),
        &[
            "--grant",
            "config",
            "--config",
            "rules=coverage => Policy Desk",
        ],
    );
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["plugin"]["outcome"], "applied");
    assert_eq!(
        json["plugin"]["message"],
        "routed by keyword \"coverage\" to Policy Desk"
    );
    let action = &json["plugin"]["actions"][0];
    assert_eq!(action["type"], "assign");
    assert_eq!(action["value"]["mainAssignment"]["users"][0], "Policy Desk");
    assert_eq!(json["answer"]["status"], 200);
    assert_eq!(json["answer"]["envelope"]["status"], "success");
    assert_eq!(json["answer"]["envelope"]["actions"][0], *action);
}

#[test]
fn issue_12_run_exits_1_when_the_plugin_fails() {
    // Not granted `config`: keyword-router fails with a dependency error.
    let (code, json) = run_json(
        &plugin_path("keyword-router"),
        &["--config", "rules=coverage => Policy Desk"],
    );
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(json["plugin"]["outcome"], "failed");
    assert!(json["plugin"]["failure"]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("capability `config` is not granted")));
    let (code, json) = run_json(&plugin_path("trap"), &[]);
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(json["plugin"]["failure"]["kind"], "trap");
}

/// The repository's `examples/` file `name`.
fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn issue_12_run_reads_crm_records_from_a_file_and_reports_what_the_call_used() {
    let crm = example("crm-sample.jsonl");
    let (code, json) = run_json(
        &plugin_path("crm-enrich"),
        &["--grant", "crm,log,config", "--crm", &crm],
    );
    assert_eq!(code, Some(0), "{json}");
    let plugin = &json["plugin"];
    assert_eq!(
        plugin["message"],
        "enriched from CRM record for rstorrie@pinnilly.com"
    );
    assert_eq!(plugin["actions"][1]["value"]["tags"][0], "VIP", "{json}");
    // What the call used: metered fuel, the instance's memory, and the
    // actions' size as max_output_bytes counts it.
    assert!(
        plugin["usage"]["fuel"].as_u64().is_some_and(|f| f > 1000),
        "{json}"
    );
    assert!(
        plugin["usage"]["peak_memory_bytes"]
            .as_u64()
            .is_some_and(|m| m >= 65_536),
        "{json}"
    );
    let actions_len = serde_json::to_string(&plugin["actions"]).unwrap().len() as u64;
    assert_eq!(plugin["output_bytes"].as_u64(), Some(actions_len), "{json}");
    // Its `log` line is in the report, not lost in the host's log.
    assert!(
        json["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "looking up rstorrie@pinnilly.com in the CRM"),
        "{json}"
    );
    // Without the file there is no CRM source: crm-enrich's dependency
    // fails, and so does the run.
    let (code, json) = run_json(&plugin_path("crm-enrich"), &["--grant", "crm"]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        json["plugin"]["failure"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no CRM source")),
        "{json}"
    );
}

#[test]
fn issue_12_run_shows_what_the_plugin_printed() {
    let (code, json) = run_json(
        &plugin_path("hostile"),
        &[
            "--grant",
            "config",
            "--config",
            "mode=print",
            "--config",
            "lines=3",
        ],
    );
    assert_eq!(code, Some(0), "{json}");
    let line = |i: usize| format!("{i:0>100}");
    let expected: Vec<String> = (0..3).map(line).collect();
    assert_eq!(json["stdout"], serde_json::json!(expected), "{json}");
    assert_eq!(json["stderr"], serde_json::json!(expected), "{json}");
    assert_eq!(json["plugin"]["usage"]["stdout_bytes"], 3 * 101, "{json}");
    assert_eq!(json["plugin"]["usage"]["stderr_bytes"], 3 * 101, "{json}");
    // Over the log budget: the lines stop at it, and the host's note says
    // what was dropped.
    let (code, json) = run_json(
        &plugin_path("hostile"),
        &[
            "--grant",
            "config",
            "--config",
            "mode=print",
            "--config",
            "lines=200",
        ],
    );
    assert_eq!(code, Some(0), "{json}");
    let kept = json["stdout"].as_array().unwrap().len() + json["stderr"].as_array().unwrap().len();
    assert_eq!(kept, 100, "max_log_lines = 100: {json}");
    let host = json["host"].as_array().unwrap();
    assert_eq!(host.len(), 1, "{json}");
    let note = host[0].as_str().unwrap();
    assert!(
        note.contains("guest log lines") && note.contains("dropped"),
        "{json}"
    );
}

#[test]
fn issue_12_run_gives_the_plugin_kv_entries_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv.json");
    let state = serde_json::json!({ "hardBounces": 1, "unsubscribed": true }).to_string();
    std::fs::write(
        &kv,
        serde_json::json!({ "engagement-tracker": { "rstorrie@pinnilly.com": state } }).to_string(),
    )
    .unwrap();
    let (code, json) = run_json(
        &plugin_path("engagement-enrich"),
        &["--grant", "kv", "--kv", kv.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(
        json["plugin"]["actions"][0]["value"]["tags"],
        serde_json::json!(["Bounced", "Unsubscribed"]),
        "{json}"
    );
    // A kv file of the wrong shape is refused with the shape it needs.
    std::fs::write(&kv, "[1, 2]").unwrap();
    let out = Command::new(enrichd_bin!())
        .args(["plugin", "run", "--payload", &example("seed-payload.json")])
        .arg(plugin_path("engagement-enrich"))
        .args(["--kv", kv.to_str().unwrap(), "--no-cache"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("namespace → {key → string value}"),
        "{stderr}"
    );
}

#[test]
fn issue_12_run_an_event_plugin_on_a_callback() {
    let run = |file: &Path, flag: &str, input: &str| {
        Command::new(enrichd_bin!())
            .args(["plugin", "run", "--json", flag, &example(input)])
            .arg(file)
            .args([
                "--grant",
                "kv,log",
                "--cache-dir",
                enrichd_tests::SHARED_CACHE,
            ])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let out = run(
        &plugin_path("engagement-tracker"),
        "--event",
        "engagelab/open.json",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["plugin"]["outcome"], "handled", "{json}");
    assert!(json["plugin"]["usage"]["fuel"]
        .as_u64()
        .is_some_and(|f| f > 0));
    assert!(
        json["log"][0]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("recorded")),
        "{json}"
    );
    // A delivery plugin given an event, and the other way round: exit 1,
    // saying which flag fits.
    let out = run(&plugin_path("crm-enrich"), "--event", "engagelab/open.json");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --payload"));
    let out = run(
        &plugin_path("engagement-tracker"),
        "--payload",
        "seed-payload.json",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --event"));
}

#[test]
fn issue_12_run_obeys_a_fuel_limit() {
    let crm = example("crm-sample.jsonl");
    let (code, json) = run_json(
        &plugin_path("crm-enrich"),
        &["--grant", "crm", "--crm", &crm, "--fuel", "1000000000"],
    );
    assert_eq!(code, Some(0), "{json}");
    let (code, json) = run_json(
        &plugin_path("crm-enrich"),
        &["--grant", "crm", "--crm", &crm, "--fuel", "500"],
    );
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(json["plugin"]["failure"]["kind"], "fuel", "{json}");
}

#[test]
fn issue_12_new_creates_a_project_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let name = format!("vip-{lang}");
        let out = Command::new(enrichd_bin!())
            .args([
                "plugin", "new", &name, "--lang", lang, "--world", "both", "--dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let project = dir.path().join(&name);
        assert_eq!(
            std::fs::read_to_string(project.join("wit/plugin.wit")).unwrap(),
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/plugin.wit"))
                .unwrap(),
            "{lang}: the project builds against this enrichd's WIT"
        );
        assert!(project.join("README.md").is_file(), "{lang}");
        // A second time: refused, and the project is untouched.
        std::fs::write(project.join("README.md"), "mine").unwrap();
        let out = Command::new(enrichd_bin!())
            .args(["plugin", "new", &name, "--lang", lang, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
        assert_eq!(
            std::fs::read_to_string(project.join("README.md")).unwrap(),
            "mine"
        );
    }
}

/// `cargo` for a project `plugin new` made, outside the repository's
/// workspaces, with a target dir kept across test runs (the first build
/// compiles wit-bindgen; later ones only the plugin).
fn project_cargo(project: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .args(args)
        .current_dir(project)
        .env(
            "CARGO_TARGET_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugin-new-rust"),
        )
        // The outer build's flags are not the plugin's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .expect("run cargo")
}

#[test]
fn issue_12_new_rust_project_builds_passes_its_tests_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(enrichd_bin!())
        .args(["plugin", "new", "vip-check", "--lang", "rust", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("vip-check");
    // The README's commands, as an author runs them.
    let built = project_cargo(
        &project,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let tested = project_cargo(&project, &["test"]);
    assert!(
        tested.status.success(),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(String::from_utf8_lossy(&tested.stdout).contains("test result: ok"));
    let wasm = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/plugin-new-rust"
    ))
    .join("wasm32-wasip2/release/vip_check.wasm");
    let inspected = inspect_json(&wasm);
    assert_eq!(inspected["world"], "delivery", "{inspected}");
    assert_eq!(inspected["loadable"], true, "{inspected}");
    // The template tags a VIP sender (the seed payload's is rstorrie@…).
    let crm = dir.path().join("crm.jsonl");
    std::fs::write(&crm, r#"{"email":"rstorrie@pinnilly.com","tier":"vip"}"#).unwrap();
    let (code, json) = run_json(
        &wasm,
        &["--grant", "log,config,crm", "--crm", crm.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["plugin"]["outcome"], "applied", "{json}");
    let tag = serde_json::json!({ "name": "Tag VIP customers", "type": "tag", "value": { "tags": ["VIP"] } });
    assert_eq!(
        json["answer"]["envelope"]["actions"],
        serde_json::json!([tag]),
        "{json}"
    );
}

/// `enrichd plugin run http-fetch --payload <seed>` with `args`: its exit
/// status and stderr, and its `--json` report when it printed one.
fn run_fetch(args: &[&str]) -> (Option<i32>, String, Option<serde_json::Value>) {
    let seed = example("seed-payload.json");
    let out = Command::new(enrichd_bin!())
        .args(["plugin", "run", "--json", "--payload", &seed])
        .arg(plugin_path("http-fetch"))
        .args(["--cache-dir", enrichd_tests::SHARED_CACHE])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run enrichd plugin run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code(),
        stderr,
        serde_json::from_slice(&out.stdout).ok(),
    )
}

#[test]
fn issue_12_run_allow_host_lets_the_plugin_reach_that_host_and_no_other() {
    // A loopback service (the test CRM) for the plugin to call.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let svc = rt.block_on(enrichd_tests::crm_server::FakeCrm::start());
    svc.add_customer("adele@contoso.com", serde_json::json!({"tier": "gold"}));
    let url = format!("url=http://{}/customers?email=adele@contoso.com", svc.addr);
    let origin = format!("http://{}", svc.addr);

    // The plugin fetches `url` with only `allow` listed; it succeeds either
    // way (a denied request is an answer to the plugin, not a failure).
    let fetch = |allow: &str| {
        let (code, stderr, json) = run_fetch(&[
            "--grant",
            "http,config",
            "--allow-host",
            allow,
            "--config",
            &url,
        ]);
        let json = json.unwrap_or_else(|| panic!("no report: {stderr}"));
        assert_eq!(code, Some(0), "{json}");
        json
    };

    let json = fetch(&origin);
    let fields = &json["plugin"]["actions"][0]["value"];
    assert_eq!(fields["r0"], "status=200 bytes=15", "{json}");
    assert_eq!(fields["body"], r#"{"tier":"gold"}"#);
    assert_eq!(json["plugin"]["http"][0]["status"], 200, "{json}");
    assert_eq!(svc.email_calls(), 1);

    // Another port of the same host is another origin: denied, not sent.
    let other = format!("http://127.0.0.1:{}", svc.addr.port() ^ 1);
    let json = fetch(&other);
    let fields = &json["plugin"]["actions"][0]["value"];
    assert_eq!(fields["r0"], "error=ErrorCode::HttpRequestDenied", "{json}");
    assert!(json["plugin"]["http"][0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("allowed_hosts")));
    assert_eq!(svc.email_calls(), 1, "a denied request was sent");
}

#[test]
fn issue_12_run_allow_host_and_grant_http_go_together_and_are_checked() {
    let (code, stderr, _) = run_fetch(&["--grant", "config", "--allow-host", "http://127.0.0.1:9"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--allow-host needs --grant http"),
        "{stderr}"
    );

    let (code, stderr, _) = run_fetch(&["--grant", "http,config"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--grant http needs at least one --allow-host"),
        "{stderr}"
    );

    // The config's syntax, checked the same way: scheme://host[:port].
    for (bad, why) in [
        ("127.0.0.1:9", "must start with http:// or https://"),
        ("https://*.example.com", "no wildcards"),
        ("https://api.example.com/v1", "not a path"),
    ] {
        let (code, stderr, _) = run_fetch(&["--grant", "http", "--allow-host", bad]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--allow-host") && stderr.contains(why),
            "{bad}: {stderr}"
        );
    }
}
