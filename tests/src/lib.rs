//! Shared helpers for the enrichd integration tests.
//!
//! The crate's build script (`tests/build.rs`) builds every plugin from
//! source for `wasm32-wasip2` before the tests compile:
//!
//! - the first-party plugins in `plugins/` (`crm-enrich`, `keyword-router`);
//! - the test-only plugins in `tests/test-plugins/` (`trap`, `guest-error`,
//!   `every-action`, `echo`, `probe-capabilities`).
//!
//! All of them land in [`PLUGIN_DIR`]; use [`plugin_path`] to find one by its
//! package name.
//!
//! [`TestServer`] runs a real enrichd (real config file, real sled store in a
//! temp dir, real plugins) on `127.0.0.1:0`, and speaks raw HTTP/1.1 to it so
//! tests control every byte (a body larger than declared, a missing header).
//!
//! [`resources`] measures what the host spends while a test runs: the
//! worst `/healthz` latency, the process's RSS, a directory's size, and the
//! bytes the host logged.
//!
//! [`process`] runs the real `enrichd` binary as a child process (several
//! hosts, `kill -9`, restarts on the same data); [`redis_server`] gives the
//! Redis tests their Redis: the shared one `scripts/check` starts
//! (`ENRICHD_TEST_REDIS_URL`), or a private one a test can stop and start.
//!
//! [`tls`] serves a [`TestServer`] over HTTPS with a certificate made in the
//! test, and gives the TLS clients that trust it.

pub mod crm_server;
pub mod polyglot;
pub mod process;
pub mod redis_server;
pub mod resources;
pub mod sandwich;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The directory holding the built plugin components
/// (`<root>/target/wasm-plugins/wasm32-wasip2/release`).
pub const PLUGIN_DIR: &str = env!("ENRICHD_PLUGIN_DIR");

/// The path of a built plugin component, by package name: `crm-enrich` →
/// `<PLUGIN_DIR>/crm_enrich.wasm`.
///
/// # Panics
///
/// When the file does not exist (an unknown plugin name, or the build script
/// did not build it).
pub fn plugin_path(name: &str) -> PathBuf {
    let path = PathBuf::from(PLUGIN_DIR).join(format!("{}.wasm", name.replace('-', "_")));
    if !path.is_file() {
        panic!(
            "plugin `{name}` not found at {}: is it a member of plugins/ or \
             tests/test-plugins/ (tests/build.rs builds both)?",
            path.display()
        );
    }
    path
}

/// The precompiled-component cache shared by all tests.
pub const SHARED_CACHE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/test-component-cache"
);

/// Why enrichd refuses to start with `config` (TOML, without `listen`):
/// the config's own error or the start's; `None` when it starts.
pub async fn start_error(config: String) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enrichd.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\ncache_dir = {SHARED_CACHE:?}\n{config}"),
    )
    .unwrap();
    let config = match enrichd::config::Config::load(&path) {
        Ok(config) => config,
        Err(e) => return Some(e.to_string()),
    };
    enrichd::app::App::build(&config)
        .await
        .err()
        .map(|e| e.to_string())
}

/// The secret the test configs accept, from the Emailgistics example.
pub const SECRET: &str = "f72jip905bn85.23po0xY1aQ7bL";

/// The seed payload from the Emailgistics request-payload documentation.
pub fn seed_payload() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed-payload.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("examples/seed-payload.json"))
        .expect("seed payload is JSON")
}

/// The seed payload as the plugins receive it (parsed, then converted to
/// the WIT delivery), for tests and benches that call a plugin directly.
pub fn seed_wit_delivery() -> enrichd::plugin::WitDelivery {
    let body = seed_payload().to_string();
    match enrichd::emailgistics::payload::parse(body.as_bytes()).expect("seed parses") {
        enrichd::emailgistics::payload::Parsed::Received(d) => {
            enrichd::emailgistics::convert::delivery(&d)
        }
        other => panic!("the seed payload is not a delivery: {other:?}"),
    }
}

/// The sample CRM data set of `examples/`.
pub fn crm_sample() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/crm-sample.jsonl"
    ))
}

/// A `[[plugin]]` table for a built plugin, named after it.
pub fn plugin_toml(name: &str, capabilities: &[&str], extra: &str) -> String {
    plugin_toml_as(name, name, capabilities, extra)
}

/// A `[[plugin]]` table named `name` for the built plugin `wasm`; `extra`
/// is more TOML for the table (limits, `[plugin.config]`).
pub fn plugin_toml_as(name: &str, wasm: &str, capabilities: &[&str], extra: &str) -> String {
    plugin_toml_at(name, &plugin_path(wasm), capabilities, extra)
}

/// A `[[plugin]]` table named `name` for the component at `path` (one not
/// in [`PLUGIN_DIR`], e.g. a [`polyglot`] build).
pub fn plugin_toml_at(
    name: &str,
    path: &std::path::Path,
    capabilities: &[&str],
    extra: &str,
) -> String {
    let caps: Vec<String> = capabilities.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[[plugin]]\nname = {name:?}\npath = {:?}\ncapabilities = [{}]\n{extra}\n",
        path,
        caps.join(", ")
    )
}

/// An HTTP response as the tests see it.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running enrichd on loopback, with its own temp dir for config and data.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin listener listens.
    pub admin_addr: SocketAddr,
    /// The running app (plugin call counters, store).
    pub app: Arc<enrichd::app::App>,
    // Config file and data directory; `None` only after `stop`.
    dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Write `config` (TOML, without `listen`) to a temp dir and serve it.
    ///
    /// # Panics
    /// When the config is refused or the server cannot start.
    pub async fn start(config: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config).await
    }

    /// Like [`TestServer::start`], in an existing directory (to reopen a data dir).
    ///
    /// # Panics
    /// When the config is refused or the server cannot start.
    pub async fn start_in(dir: tempfile::TempDir, config: &str) -> TestServer {
        let path = dir.path().join("enrichd.toml");
        // Tests share one component cache, so a plugin is compiled once per
        // build rather than once per test (debug-build compiles take seconds).
        let cache = if config.contains("cache_dir") {
            String::new()
        } else {
            format!("cache_dir = {SHARED_CACHE:?}\n")
        };
        std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{cache}{config}"))
            .expect("write config");
        let config = enrichd::config::Config::load(&path).expect("config is valid");
        let app = build_when_released(&config).await;
        // `POST /reload` on the admin listener reads the file again.
        let app =
            Arc::new(app.reloading_from(Box::new(move || enrichd::config::Config::load(&path))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let addr = listener.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("admin addr");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            let mut rx = stopped;
            let _ = rx.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(enrichd::app::run(
            listener,
            Some(admin),
            app.clone(),
            shutdown,
        ));
        TestServer {
            addr,
            admin_addr,
            app,
            dir: Some(dir),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Callbacks queued (leased ones included).
    pub async fn queued(&self) -> usize {
        self.app.storage().events.len().await.expect("queue length")
    }

    /// Wait (up to 30 s) until every queued callback is processed.
    pub async fn drained(&self) {
        let empty = || async { (self.queued().await == 0).then_some(()) };
        process::eventually(
            "the queue drained",
            std::time::Duration::from_secs(30),
            empty,
        )
        .await
    }

    /// Fingerprints held by the EngageLab duplicate filter.
    pub async fn seen(&self) -> usize {
        self.app
            .storage()
            .events
            .seen_len()
            .await
            .expect("filter size")
    }

    /// Answers stored (expired ones included until swept).
    pub async fn stored(&self) -> usize {
        self.app
            .storage()
            .answers
            .len()
            .await
            .expect("answers stored")
    }

    /// GET a path from the admin listener.
    pub async fn admin_get(&self, path: &str) -> Response {
        get(self.admin_addr, path).await
    }

    /// The directory holding the config file and the data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("server not stopped").path()
    }

    /// Stop accepting, wait for the server to finish (and release the data
    /// directory), and hand back the dir.
    ///
    /// # Panics
    /// When the server task failed.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
        // `self` (and with it the last reference to the App, which holds
        // the sled lock) is dropped on return.
        self.dir.take().expect("stopped once")
    }

    /// POST a delivery with the test secret.
    pub async fn deliver(&self, path: &str, body: &serde_json::Value) -> Response {
        deliver(self.addr, path, body).await
    }

    /// POST `body` with extra headers.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        post(self.addr, path, headers, body).await
    }

    /// Send raw bytes and read the response until the server closes.
    /// Write errors are ignored: the server may answer (413) and close
    /// before the client has sent everything.
    pub async fn raw(&self, request: &[u8]) -> Response {
        raw_request(self.addr, request).await
    }
}

/// POST a delivery to `addr` with the test secret.
pub async fn deliver(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Response {
    raw_request(addr, &delivery_request(addr, path, body)).await
}

/// The bytes of a delivery POST to `addr` with the test secret.
pub fn delivery_request(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Vec<u8> {
    let auth = format!("Bearer {SECRET}");
    post_request(
        addr,
        path,
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    )
}

/// POST `body` (JSON) to `addr` with extra headers.
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    raw_request(addr, &post_request(addr, path, headers, body)).await
}

/// The bytes of a `POST path` of JSON `body` to `addr`, with extra headers
/// (`Connection: close`).
pub fn post_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// GET `path` from `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_request(addr, req.as_bytes()).await
}

/// POST `body` to the EngageLab route `path` on `addr`, signed with
/// `app_key` and the current time (as EngageLab signs: hex HMAC-SHA256 of
/// the timestamp).
pub async fn signed_callback(addr: SocketAddr, path: &str, app_key: &str, body: &str) -> Response {
    let headers = process::engagelab_headers(app_key);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post(addr, path, &headers, body.as_bytes()).await
}

/// Send raw bytes to `addr` and read the response until the server closes.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> Response {
    try_raw_request(addr, request)
        .await
        .unwrap_or_else(|e| panic!("no response: {e}"))
}

/// Like [`raw_request`], but a refused connection or a connection closed
/// before a whole response head (a killed server) is an `Err`.
pub async fn try_raw_request(addr: SocketAddr, request: &[u8]) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        stream.read_to_end(&mut buf),
    )
    .await;
    if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(format!("{read:?} after {} bytes", buf.len()));
    }
    Ok(parse_response(&buf))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// The median (ns) of the last run of a criterion benchmark, read from the
/// estimates criterion writes; the benches print ratios from these.
pub fn criterion_median_ns(group: &str, bench: &str) -> Option<f64> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/criterion"))
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Build the app, retrying briefly while a previous server of the same test
/// lets go of the data directory: sled releases its file lock from a
/// background thread a moment after the last handle is dropped.
async fn build_when_released(config: &enrichd::config::Config) -> enrichd::app::App {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match enrichd::app::App::build(config).await {
            Ok(app) => return app,
            Err(enrichd::app::StartError::Store { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("enrichd does not start: {e}"),
        }
    }
}

/// Parse an HTTP/1.1 response with a Content-Length body (what enrichd sends).
///
/// # Panics
/// When the bytes are not such a response.
pub fn parse_response(buf: &[u8]) -> Response {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Response {
        status,
        headers,
        body,
    }
}
