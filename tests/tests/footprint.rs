//! Issue 16, items 3 and 4: a plugin whose `max_instances` is below the
//! core instances its component creates is refused at start with one
//! message, the same under both allocators; and a `max_instances` above
//! the pooling allocator's former fixed cap (16) takes effect.
//!
//! The component needing many core instances is the `echo` test plugin with
//! a core module section and a core instance section appended (a component
//! is a sequence of sections; the appended ones instantiate an empty module
//! [`EXTRA`] times, which costs an instance each and does nothing else).

use std::path::{Path, PathBuf};

use enrichd_tests::{plugin_toml_at, seed_payload, start_error, TestServer};

/// Extra core instances: with echo's 3, 20 in all, above the old cap of 16.
const EXTRA: u8 = 17;

/// The core module sections at the top level of `component` (each holds
/// one module; wit-component emits no other kind of core module definition).
fn top_level_modules(component: &[u8]) -> u8 {
    let mut at = 8;
    let mut modules = 0;
    let leb = |at: &mut usize| {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = component[*at];
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return value;
            }
        }
    };
    while at < component.len() {
        let id = component[at];
        at += 1;
        let size = leb(&mut at);
        if id == 1 {
            modules += 1;
        }
        at += size;
    }
    modules
}

/// `echo` with [`EXTRA`] instances of an empty module, written to `dir`.
fn many_instances(dir: &Path) -> PathBuf {
    let mut wasm = std::fs::read(enrichd_tests::plugin_path("echo")).unwrap();
    let index = top_level_modules(&wasm);
    assert!(index < 0x80, "one-byte index");
    let empty = b"\0asm\x01\0\0\0";
    wasm.extend_from_slice(&[1, empty.len() as u8]);
    wasm.extend_from_slice(empty);
    // Core instance section: EXTRA × (instantiate module `index`, no args).
    let mut instances = vec![EXTRA];
    for _ in 0..EXTRA {
        instances.extend_from_slice(&[0, index, 0]);
    }
    wasm.push(2);
    wasm.push(instances.len() as u8);
    wasm.extend_from_slice(&instances);
    let path = dir.join("many_instances.wasm");
    std::fs::write(&path, wasm).unwrap();
    path
}

fn single(wasm: &Path, max_instances: u8, allocator: &str) -> String {
    format!(
        "allocator = {allocator:?}\n{}[[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"many\" }}]\n",
        plugin_toml_at("many", wasm, &[], &format!("max_instances = {max_instances}"))
    )
}

#[tokio::test]
async fn issue_16_max_instances_below_the_core_instances_is_one_error_under_both_allocators() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = many_instances(dir.path());
    let footprint =
        enrichd::plugin::footprint::Footprint::of(&std::fs::read(&wasm).unwrap()).unwrap();
    assert_eq!(footprint.core_instances, 3 + u64::from(EXTRA));
    let mut errors = Vec::new();
    for allocator in ["pooling", "on-demand"] {
        let err = start_error(single(&wasm, 19, allocator))
            .await
            .unwrap_or_else(|| panic!("{allocator}: started with max_instances below its needs"));
        println!("{allocator}: {err}");
        errors.push(err);
    }
    assert_eq!(
        errors[0],
        "plugin \"many\": its component needs 20 core instances, above max_instances = 19; raise max_instances for this plugin"
    );
    assert_eq!(errors[0], errors[1], "the same under both allocators");
}

/// Before issue 16 the pool admitted 16 core instances per component
/// whatever `max_instances` said, and refused this component at start.
#[tokio::test]
async fn issue_16_max_instances_above_16_takes_effect_under_pooling() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = many_instances(dir.path());
    for allocator in ["pooling", "on-demand"] {
        let server = TestServer::start(&single(&wasm, 20, allocator)).await;
        let res = server.deliver("/hook", &seed_payload()).await;
        let body = res.json();
        assert_eq!(res.status, 200, "{allocator}: {body}");
        assert_eq!(body["status"], "success", "{allocator}: {body}");
        assert_eq!(
            body["actions"].as_array().map(Vec::len),
            Some(1),
            "{allocator}: echo's action: {body}"
        );
    }
}

/// The pool's address space is computed, not hoped for: limits that would
/// make it reserve more than its budget refuse `pooling` with the reason,
/// and `auto` falls back to on-demand allocation.
#[tokio::test]
async fn issue_16_a_pool_beyond_its_address_space_budget_is_refused_or_skipped() {
    let huge_tables = |allocator: &str| {
        format!(
            "allocator = {allocator:?}\n{}[[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"echo\" }}]\n",
            enrichd_tests::plugin_toml("echo", &[], "max_table_elements = 1000000000")
        )
    };
    let err = start_error(huge_tables("pooling"))
        .await
        .expect("pooling refused");
    assert!(
        err.contains("max_table_elements = 1000000000") && err.contains("budget of 16384 GiB"),
        "{err}"
    );
    let server = TestServer::start(&huge_tables("auto")).await;
    assert_eq!(
        server.app.engine().allocator(),
        enrichd::plugin::AllocatorKind::OnDemand
    );
    let res = server.deliver("/hook", &seed_payload()).await;
    assert_eq!(res.json()["status"], "success");
}
