//! Redis for the tests: the shared one the test command starts, and
//! private ones a test can stop and start again.
//!
//! `scripts/check` starts one `redis-server` on a free loopback port and
//! sets [`URL_VAR`]; tests that only need *a* Redis use it through
//! [`shared_url`], each under its own [`unique_prefix`] so tests sharing
//! it never see each other's keys. Without the variable a Redis test
//! **fails**, saying how to set it, unless [`SKIP_VAR`]` = 1` (quick local
//! runs): a Redis test that passes silently without Redis would be a test
//! that cannot fail.
//!
//! A test that stops Redis under running hosts starts its own
//! [`RedisServer`] (a child process on a free port in a temp dir, with the
//! append-only file on, as the README asks of production), stops it and
//! starts it again on the same port and directory, so the hosts reconnect
//! to the same address and find the same data.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The variable naming the shared test Redis, e.g. `redis://127.0.0.1:6390/`.
pub const URL_VAR: &str = "ENRICHD_TEST_REDIS_URL";

/// Set to `1` to skip the Redis tests (they print that they skipped).
pub const SKIP_VAR: &str = "ENRICHD_SKIP_REDIS_TESTS";

/// How long a starting redis-server gets to answer PING. It starts in
/// milliseconds; the margin is for a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many free ports are tried before giving up: another process may
/// take the port between our probe and redis-server's bind.
const PORT_ATTEMPTS: usize = 5;

/// Whether Redis tests are skipped ([`SKIP_VAR`]` = 1`); prints a line
/// naming `test` when they are, so a skip is never silent.
pub fn skipped(test: &str) -> bool {
    let skip = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: skipped ({SKIP_VAR}=1)");
    }
    skip
}

/// The shared test Redis's URL, or `None` when Redis tests are skipped.
///
/// # Panics
/// When [`URL_VAR`] is not set (and the tests are not skipped).
pub fn shared_url(test: &str) -> Option<String> {
    if skipped(test) {
        return None;
    }
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => panic!(
            "{test} needs a Redis: run it through ./scripts/check (which starts one), or start \
             one (redis-server --port 6390 --bind 127.0.0.1 --save \"\" --appendonly yes) and set \
             {URL_VAR}=redis://127.0.0.1:6390/ ; or set {SKIP_VAR}=1 to skip the Redis tests"
        ),
    }
}

/// A Redis key prefix used by no other test, process or run:
/// `t:<name>:<pid>.<n>.<ms>:` (at most 64 bytes, the config's bound).
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name: String = name.chars().take(24).collect();
    format!(
        "t:{name}:{}.{}.{ms}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private redis-server on loopback; stopped (killed) when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Start one on a free port in a new temp dir.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not start.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn(port, dir.path()) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        dir,
                        child: Some(child),
                    }
                }
                Err(e) => last = e,
            }
        }
        panic!("cannot start redis-server ({PORT_ATTEMPTS} ports tried): {last}")
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Stop it (`SHUTDOWN NOSAVE`: the append-only file is flushed, no RDB
    /// snapshot is written) and wait until the process is gone.
    ///
    /// # Panics
    /// When it is not running.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("redis-server is running");
        let _ = command(self.addr(), "SHUTDOWN NOSAVE");
        let deadline = Instant::now() + START_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }

    /// Start it again on the same port and directory (same data).
    ///
    /// # Panics
    /// When it is running, or cannot start (e.g. the port was taken
    /// meanwhile).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is running");
        let child = spawn(self.port, self.dir.path())
            .unwrap_or_else(|e| panic!("cannot restart redis-server: {e}"));
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Start redis-server on `port` in `dir` and wait until it answers PING.
fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join(format!("redis-{port}.log")))
        .map_err(|e| format!("log file: {e}"))?;
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args(["--save", "", "--appendonly", "yes"])
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "redis-server: {e} (install it: apt-get install redis-server; scripts/check does)"
            )
        })?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log =
                std::fs::read_to_string(dir.join(format!("redis-{port}.log"))).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} exited ({status}): {log}"
            ));
        }
        if command(addr, "PING").is_ok_and(|r| r.starts_with("+PONG")) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-server on port {port} did not answer PING"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send one inline command and read the first reply chunk.
fn command(addr: SocketAddr, cmd: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{cmd}\r\n").as_bytes())?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
