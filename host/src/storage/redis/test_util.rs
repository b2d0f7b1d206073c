//! What the Redis tests share: the test Redis from `ENRICHD_TEST_REDIS_URL`
//! (a run without it fails, unless `ENRICHD_SKIP_REDIS_TESTS=1`), a key
//! prefix unique to each test, hosts opened on it, and a private
//! `redis-server` a test can stop and restart.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::storage::{Limits, RedisSettings, Storage};

/// The test Redis's URL, or `None` when Redis tests are skipped on purpose.
///
/// # Panics
///
/// When neither variable is set: a Redis test that cannot run must not
/// pass silently.
pub(crate) fn redis_url() -> Option<String> {
    if let Ok(url) = std::env::var("ENRICHD_TEST_REDIS_URL") {
        return Some(url);
    }
    if skipped() {
        eprintln!("ENRICHD_SKIP_REDIS_TESTS=1: skipping a Redis test");
        return None;
    }
    panic!(
        "this test needs a Redis: set ENRICHD_TEST_REDIS_URL=redis://127.0.0.1:PORT/ \
         (scripts/check starts one), or ENRICHD_SKIP_REDIS_TESTS=1 to skip the Redis tests"
    );
}

/// Whether Redis tests are skipped on purpose.
pub(crate) fn skipped() -> bool {
    std::env::var("ENRICHD_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1")
}

/// The test Redis's URL, or return from the test when skipped.
macro_rules! redis_or_skip {
    () => {
        match $crate::storage::redis::test_util::redis_url() {
            Some(url) => url,
            None => return,
        }
    };
}
pub(crate) use redis_or_skip;

/// A key prefix no other test (or test run) uses.
pub(crate) fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "enrichd-test:{test}:{}-{nanos}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One enrichd host on the Redis at `url`, keys under `prefix`.
pub(crate) async fn host(url: &str, prefix: &str, limits: &Limits) -> Storage {
    let settings = RedisSettings {
        url: url.to_owned(),
        key_prefix: prefix.to_owned(),
    };
    super::open(&settings, limits, Clock::new())
        .await
        .expect("open the redis backend")
}

/// Two hosts sharing one Redis (and one prefix).
pub(crate) async fn two_hosts(url: &str, test: &str, limits: &Limits) -> (Storage, Storage) {
    let prefix = unique_prefix(test);
    (
        host(url, &prefix, limits).await,
        host(url, &prefix, limits).await,
    )
}

/// A private `redis-server` on a free loopback port, with its append-only
/// file in a temp dir; stopped when dropped.
pub(crate) struct OwnRedis {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Start one and wait until it answers.
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let redis = OwnRedis { port, dir };
        redis.launch();
        redis
    }

    /// `redis://127.0.0.1:port/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Start the server (again) on the same port and dir.
    pub(crate) fn launch(&self) {
        let dir: &Path = self.dir.path();
        let status = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "yes", "--daemonize", "yes"])
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .status()
            .expect("redis-server must be installed (apt-get install redis-server)");
        assert!(status.success(), "redis-server did not start");
        for _ in 0..100 {
            if self.cli(&["ping"]).is_some_and(|out| out.trim() == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} does not answer", self.port);
    }

    /// Stop the server (its AOF stays in the dir for a restart).
    pub(crate) fn stop(&self) {
        let _ = self.cli(&["shutdown", "nosave"]);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} does not stop", self.port);
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        // A test that failed while the server was frozen must not hang here.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("redis.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
        }
        let _ = self.cli(&["shutdown", "nosave"]);
    }
}

impl OwnRedis {
    /// Freeze the server (`SIGSTOP`): it holds its connections but answers
    /// nothing, like a Redis behind a partition; [`OwnRedis::resume`] ends it.
    pub(crate) fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resume a frozen server.
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("redis.pid")).expect("pid file");
        let status = Command::new("kill")
            .args([signal, pid.trim()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}
