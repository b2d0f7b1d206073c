//! Issue 16 item 5: the precompiled-component cache is bounded. A plugin
//! rebuilt again and again (here: swapped for another Rust test component
//! at each restart, as a non-reproducible build would be) keeps the cache
//! under `cache_max_bytes`, the least recently used builds going first;
//! with no grace period only the build in use stays; servers sharing one
//! cache directory survive each other's sweeps.
//!
//! Issue 15: the cache follows `--data-dir` as the rest of the data does.

use std::path::Path;

use enrichd_tests::process::serve;
use enrichd_tests::{enrichd_bin, plugin_path, seed_payload, TestServer};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The successive "builds" of the plugin: distinct components. The first
/// is bigger than the cap on its own: kept while in use, then the first to go.
const BUILDS: [&str; 6] = [
    "hostile",
    "echo",
    "every-action",
    "guest-error",
    "trap",
    "probe-capabilities",
];
/// Room for two or three of these entries (160–190 KB each in a debug
/// build; `hostile`'s 670 KB), not six.
const CAP: u64 = 512 << 10;

/// One plugin, `plugin.wasm` beside the config, on `/hook`.
const ONE_PLUGIN: &str = "[[plugin]]\nname = \"p\"\npath = \"plugin.wasm\"\ncapabilities = []\n\
     [[route]]\npath = \"/hook\"\nchain = [{ plugin = \"p\" }]\n";

/// A server with [`ONE_PLUGIN`] and its cache in `cache_dir`.
fn config(cache_dir: &str, cap: u64, grace_hours: u64) -> String {
    format!(
        "cache_dir = {cache_dir:?}\ncache_max_bytes = {cap}\ncache_grace_hours = {grace_hours}\n{ONE_PLUGIN}"
    )
}

/// "Build" `name`: put its component at `<dir>/plugin.wasm`; its digest.
fn build(dir: &Path, name: &str) -> String {
    let bytes = std::fs::read(plugin_path(name)).unwrap();
    std::fs::write(dir.join("plugin.wasm"), &bytes).unwrap();
    hex::encode(Sha256::digest(&bytes))
}

/// The cache entries in `cache`: the digest each is for, and its bytes.
fn entries(cache: &Path) -> Vec<(String, u64)> {
    let mut entries: Vec<(String, u64)> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name[..64].to_owned(), e.metadata().unwrap().len())
        })
        .collect();
    entries.sort();
    entries
}

fn digests(entries: &[(String, u64)]) -> Vec<&str> {
    entries.iter().map(|(d, _)| d.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_rebuilding_a_plugin_keeps_the_component_cache_under_its_cap_across_restarts() {
    let mut dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut history: Vec<String> = Vec::new();
    for name in BUILDS {
        history.push(build(dir.path(), name));
        let server = TestServer::start_in(dir, &config("cache", CAP, 168)).await;
        let on_disk = entries(&cache);
        let total: u64 = on_disk.iter().map(|(_, b)| b).sum();
        eprintln!("after {name}: {on_disk:?}");
        let in_use = on_disk
            .iter()
            .find(|(d, _)| Some(d) == history.last())
            .map_or(0, |(_, b)| *b);
        assert!(
            total <= CAP.max(in_use),
            "after {name}: {total} bytes above the cap"
        );
        // What is kept is the newest builds, the one in use among them.
        let kept: Vec<&str> = history
            .iter()
            .map(String::as_str)
            .filter(|d| digests(&on_disk).contains(d))
            .collect();
        assert_eq!(kept.last().copied(), history.last().map(String::as_str));
        assert_eq!(
            kept,
            history[history.len() - kept.len()..]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            "after {name}: not the least recently used went"
        );
        // The admin listener reports the same.
        let stats = server.admin_get("/stats").await.json();
        assert_eq!(
            stats["componentCache"],
            json!({"entries": on_disk.len(), "bytes": total}),
            "{stats}"
        );
        dir = server.stop().await;
    }
    let left = entries(&cache);
    assert!(
        left.len() < BUILDS.len(),
        "the cap removed nothing: {left:?}"
    );
    assert!(
        left.len() >= 2,
        "the previous build should still fit for a rollback: {left:?}"
    );

    // With no grace period, only the build in use stays.
    let server = TestServer::start_in(dir, &config("cache", CAP, 0)).await;
    assert_eq!(
        digests(&entries(&cache)),
        vec![history.last().unwrap().as_str()]
    );
    server.stop().await;
}

/// Two servers, one cache directory, a cap of 0: each start removes the
/// other's entry while the other runs. The running server keeps serving
/// (its components are in memory) and its next start recompiles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_servers_sharing_a_cache_dir_survive_each_others_sweeps() {
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().to_str().unwrap().to_owned();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_digest = build(a_dir.path(), "echo");
    let b_digest = build(b_dir.path(), "every-action");
    let delivered = |server: &TestServer| {
        let addr = server.addr;
        async move {
            let res = enrichd_tests::deliver(addr, "/hook", &seed_payload()).await;
            assert_eq!(res.status, 200);
            let body = res.json();
            assert_eq!(body["status"], "success", "{body}");
            assert!(
                !body["message"].as_str().unwrap().contains("failed"),
                "{body}"
            );
        }
    };

    let a = TestServer::start_in(a_dir, &config(&cache, 0, 0)).await;
    assert_eq!(digests(&entries(shared.path())), vec![a_digest.as_str()]);
    let b = TestServer::start_in(b_dir, &config(&cache, 0, 0)).await;
    assert_eq!(digests(&entries(shared.path())), vec![b_digest.as_str()]);
    delivered(&a).await;
    delivered(&b).await;

    let a = TestServer::start_in(a.stop().await, &config(&cache, 0, 0)).await;
    assert_eq!(digests(&entries(shared.path())), vec![a_digest.as_str()]);
    delivered(&a).await;
    delivered(&b).await;
    a.stop().await;
    b.stop().await;
}

/// Issue 15: `--data-dir` moves everything the config's `data_dir` would,
/// the compiled-component cache included. Two real `enrichd serve`
/// processes on one config (no `cache_dir`, the default `data_dir`), each
/// with its own `--data-dir`: each compiles into its own data directory,
/// and nothing is written under the config's `data_dir`.
#[test]
fn issue_15_cache_follows_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let digest = build(dir.path(), "echo");
    let config = dir.path().join("enrichd.toml");
    std::fs::write(&config, ONE_PLUGIN).unwrap();
    let data = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut servers = Servers(Vec::new());
    for d in &data {
        let args = [std::ffi::OsStr::new("--data-dir"), d.path().as_os_str()];
        let (child, _, _) = serve(enrichd_bin!(), &config, &args).expect("serve starts");
        servers.0.push(child);
    }
    for d in &data {
        let cache = d.path().join("component-cache");
        assert!(
            cache.is_dir(),
            "no cache under --data-dir {}",
            d.path().display()
        );
        assert_eq!(digests(&entries(&cache)), vec![digest.as_str()]);
    }
    assert!(
        !dir.path().join("data").exists(),
        "written under the config's data_dir despite --data-dir"
    );
}

/// Child processes killed (and reaped) when the test ends, passed or not.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
