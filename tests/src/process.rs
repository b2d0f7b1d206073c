//! Real `enrichd serve` processes: several hosts on loopback, `kill -9`,
//! restarts on the same config and data.
//!
//! [`Host::start`] writes a config to a temp dir of its own, starts the
//! binary with `--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`, reads
//! both bound addresses from its `enrichd listening addr=… admin=…` log
//! line and waits until `/healthz` answers. Its stderr is kept (see
//! [`Host::log_lines`]): which host ran a plugin is read from there, and a
//! failing test prints each host's last lines.
//!
//! The binary is the tests package's copy of `enrichd`; integration tests
//! name it with [`enrichd_bin!`](crate::enrichd_bin) (only they can see
//! `CARGO_BIN_EXE_*`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Response;

/// The path of the `enrichd` binary built for the tests
/// (`enrichd-under-test`), for [`Host::start`].
#[macro_export]
macro_rules! enrichd_bin {
    () => {
        std::path::Path::new(env!("CARGO_BIN_EXE_enrichd-under-test"))
    };
}

/// How long a host gets from spawn to its "listening" line: it compiles
/// (or loads from the shared cache) every plugin first, seconds each in a
/// debug build on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `/healthz` gets to answer once the host listens.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one `/healthz` probe waits (it answers in microseconds when up).
const HEALTHZ_PROBE: Duration = Duration::from_secs(2);

/// The line [`Host`] puts in its kept log before each start.
const STARTED: &str = "--- (re)started by the test ---";

/// Log lines printed per host when a test fails.
const LOG_TAIL: usize = 60;

/// One running (or killed) enrichd process and its directory.
pub struct Host {
    /// A name for messages (`A`, `B`…).
    pub name: String,
    /// The public listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin_addr: SocketAddr,
    binary: PathBuf,
    config: PathBuf,
    /// `--log-format`, when given.
    log_format: Option<String>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    // Holds the config and data; removed when the host is dropped.
    _dir: tempfile::TempDir,
}

impl Host {
    /// Write `config` (TOML without `listen`/`admin_listen`; the shared
    /// component cache is added unless it sets `cache_dir`) to a new temp
    /// dir and start `binary` on it.
    ///
    /// # Panics
    /// When the host does not start (its log is in the message).
    pub async fn start(binary: &Path, name: &str, config: &str) -> Host {
        Self::start_logging(binary, name, config, Some("text")).await
    }

    /// [`Host::start`] with `--log-format log_format` (`None`: no flag, the
    /// binary's default for a non-terminal stderr).
    ///
    /// # Panics
    /// When the host does not start (its log is in the message).
    pub async fn start_logging(
        binary: &Path,
        name: &str,
        config: &str,
        log_format: Option<&str>,
    ) -> Host {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("enrichd.toml");
        let cache = if config.contains("cache_dir") {
            String::new()
        } else {
            format!("cache_dir = {:?}\n", crate::SHARED_CACHE)
        };
        std::fs::write(&path, format!("{cache}{config}")).expect("write config");
        let mut host = Host {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            binary: binary.to_owned(),
            config: path,
            log_format: log_format.map(str::to_owned),
            child: None,
            log: Arc::default(),
            _dir: dir,
        };
        host.restart().await;
        host
    }

    /// Start the process again on the same config and data directory
    /// (after [`Host::kill`]); it gets new ports.
    ///
    /// # Panics
    /// When it is running, or does not start.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "host {} is running", self.name);
        self.log_line(STARTED.to_owned());
        let (binary, config, log) = (self.binary.clone(), self.config.clone(), self.log.clone());
        let (name, format) = (self.name.clone(), self.log_format.clone());
        let (child, addr, admin) = tokio::task::spawn_blocking(move || {
            spawn(&binary, &config, format.as_deref(), &[], log)
        })
        .await
        .expect("spawn task")
        .unwrap_or_else(|e| panic!("host {name} did not start: {e}"));
        (self.child, self.addr, self.admin_addr) = (Some(child), addr, admin);
        let deadline = Instant::now() + HEALTHZ_TIMEOUT;
        // The admin listener's /healthz: plain HTTP even when the public
        // listener speaks TLS, and served by the same `app::run`.
        let probe = format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        loop {
            let answer = tokio::time::timeout(
                HEALTHZ_PROBE,
                crate::try_raw_request(admin, probe.as_bytes()),
            );
            if answer.await.is_ok_and(|r| r.is_ok_and(|r| r.status == 200)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host {name}: /healthz did not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id, while it runs (to signal it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` the process and reap it.
    ///
    /// # Panics
    /// When it is not running.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("host is running");
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        child.wait().expect("reap");
        self.log_line(format!("--- {} killed (SIGKILL) ---", self.name));
    }

    /// Send SIGHUP (what `systemctl reload` does) and return.
    ///
    /// # Panics
    /// When it is not running, or `kill` fails.
    pub fn hangup(&self) {
        let pid = self.child.as_ref().expect("host is running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {pid}");
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// POST a delivery with the test secret.
    ///
    /// # Panics
    /// When no answer comes.
    pub async fn deliver(&self, path: &str, body: &serde_json::Value) -> Response {
        self.try_deliver(path, body)
            .await
            .unwrap_or_else(|e| panic!("host {}: no answer: {e}", self.name))
    }

    /// POST `body` with extra headers.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        crate::post(self.addr, path, headers, body).await
    }

    /// POST an EngageLab callback signed with `app_key`; `Err` when no
    /// answer came (the host is down).
    pub async fn callback(
        &self,
        path: &str,
        app_key: &str,
        body: &str,
    ) -> Result<Response, String> {
        let headers = engagelab_headers(app_key);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let request = crate::post_request(self.addr, path, &headers, body.as_bytes());
        crate::try_raw_request(self.addr, &request).await
    }

    /// POST a delivery with the test secret; `Err` when no answer came.
    pub async fn try_deliver(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, String> {
        let request = crate::delivery_request(self.addr, path, body);
        crate::try_raw_request(self.addr, &request).await
    }

    /// GET a path from the admin listener.
    pub async fn admin_get(&self, path: &str) -> Response {
        crate::get(self.admin_addr, path).await
    }

    /// How many times this process called `plugin` (admin `/stats`).
    ///
    /// # Panics
    /// When `/stats` does not answer or does not name the plugin.
    pub async fn plugin_calls(&self, plugin: &str) -> u64 {
        let stats = self.admin_get("/stats").await.json();
        stats["plugins"][plugin]["calls"]
            .as_u64()
            .unwrap_or_else(|| {
                panic!(
                    "host {}: /stats has no calls of {plugin}: {stats}",
                    self.name
                )
            })
    }

    /// The lines of its log (every start; kills marked) containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// The run keys the `hostile` plugin in `count` mode logged here as
    /// `plugin` (its `count: <key>` lines); with `since_start`, only those
    /// of the current process (not of killed ones).
    pub fn logged_runs(&self, plugin: &str, since_start: bool) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let from = if since_start {
            log.iter().rposition(|l| l == STARTED).map_or(0, |i| i + 1)
        } else {
            0
        };
        // tracing prints string fields quoted (`plugin="x"`), but be lenient.
        let fields = [format!("plugin={plugin} "), format!("plugin=\"{plugin}\"")];
        log[from..]
            .iter()
            .filter(|l| fields.iter().any(|f| l.contains(f.as_str())))
            .filter_map(|l| l.split("count: ").nth(1))
            .filter_map(|k| k.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    fn log_line(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            eprintln!("--- host {}: last {LOG_TAIL} log lines ---", self.name);
            for line in &log[log.len().saturating_sub(LOG_TAIL)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// The storage the config at `config` names, opened in this process with
/// the hosts' own settings (to read what they stored: kv, answers, queue).
/// With sled, only once the host is gone (sled allows one process).
///
/// # Panics
/// When the config is invalid or the storage does not open.
pub async fn open_storage(config: &Path) -> enrichd::storage::Storage {
    let config = enrichd::config::Config::load(config).expect("config is valid");
    let settings = config.storage_settings();
    enrichd::storage::open(&settings, enrichd::clock::Clock::new())
        .await
        .unwrap_or_else(|e| panic!("cannot open the hosts' storage: {e}"))
}

/// A bare `enrichd serve` on `config` with `args` added (`--data-dir …`),
/// logging text, listening: the child (the caller kills it) and its public
/// and admin addresses. For tests of the command line itself; [`Host`] for
/// the rest.
pub fn serve(
    binary: &Path,
    config: &Path,
    args: &[&std::ffi::OsStr],
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    spawn(binary, config, Some("text"), args, Arc::default())
}

/// Spawn `enrichd serve` (with `--log-format log_format`, if any, and
/// `args` added) and wait for its "listening" line; every stderr line goes
/// to `log`. Returns the child and its public and admin addresses.
fn spawn(
    binary: &Path,
    config: &Path,
    log_format: Option<&str>,
    args: &[&std::ffi::OsStr],
    log: Arc<Mutex<Vec<String>>>,
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let mut command = Command::new(binary);
    if let Some(format) = log_format {
        command.args(["--log-format", format]);
    }
    let mut child = command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        // A start error is one line, not a backtrace (panics keep theirs).
        .env("RUST_LIB_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = log.clone();
    // Drains the log for the process's whole life, so it never blocks on a
    // full pipe; the channel closes when the process exits.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("enrichd listening") {
                let _ = tx.send(line.clone());
            }
            kept.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    });
    let tail = || {
        let log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log[log.len().saturating_sub(LOG_TAIL)..].join("\n")
    };
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            // Let the reader thread take the last lines.
            std::thread::sleep(Duration::from_millis(100));
            return Err(format!(
                "no \"enrichd listening\" line ({e}); log:\n{}",
                tail()
            ));
        }
    };
    // A text line says `addr=…`; a JSON line has the fields in `fields`.
    let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
    let field = |name: &str| -> Result<SocketAddr, String> {
        match &json {
            Some(json) => json["fields"][name].as_str(),
            None => line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')),
        }
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {name}=<address> in {line:?}"))
    };
    Ok((child, field("addr")?, field("admin")?))
}

/// Poll `check` every 50 ms until it gives a value; `what` names the wait
/// in the panic.
///
/// # Panics
/// When `within` passes first.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out ({within:?}) waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The headers of an EngageLab callback signed with `app_key` now.
pub fn engagelab_headers(app_key: &str) -> Vec<(&'static str, String)> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .to_string();
    vec![
        (
            "X-WebHook-Signature",
            enrichd::engagelab::verify::sign(app_key, &ts),
        ),
        ("X-WebHook-Timestamp", ts),
        ("X-WebHook-AppKey", "email".to_owned()),
    ]
}

/// One of the EngageLab callback examples in `examples/engagelab/`
/// (`open`, `soft_bounce`…).
pub fn engagelab_example(kind: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/engagelab/{kind}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("examples/engagelab/{kind}.json: {e}"))
}
