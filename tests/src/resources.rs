//! What the host spends while a test runs, measured from outside the code
//! under test: how long `/healthz` takes to answer meanwhile, the process's
//! resident memory, the bytes a directory holds, and what was logged.
//!
//! Tests that check "one bad plugin never slows the others or the health
//! check" should run on a multi-threaded runtime with two workers, like
//! the 2-core machines enrichd is deployed on:
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How often [`healthz_worst_during`] probes.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Run `work` while probing `GET /healthz` on `addr` every 20 ms; returns
/// `work`'s output, the worst probe latency seen and the number of probes.
/// A probe that gets no answer within 10 s counts as 10 s.
///
/// # Panics
/// When a probe gets an answer other than 200.
pub async fn healthz_worst_during<T>(
    addr: SocketAddr,
    work: impl Future<Output = T>,
) -> (T, Duration, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut worst, mut probes) = (Duration::ZERO, 0usize);
            // At least one probe, even when `work` is instant.
            loop {
                let started = Instant::now();
                let req =
                    format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                let probe = tokio::time::timeout(
                    Duration::from_secs(10),
                    crate::raw_request(addr, req.as_bytes()),
                )
                .await;
                let took = started.elapsed();
                if let Ok(res) = probe {
                    assert_eq!(res.status, 200, "/healthz answered {}", res.status);
                }
                worst = worst.max(took);
                probes += 1;
                if stop.load(Ordering::Relaxed) {
                    return (worst, probes);
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }
    });
    let out = work.await;
    stop.store(true, Ordering::Relaxed);
    let (worst, probes) = prober.await.expect("healthz prober");
    (out, worst, probes)
}

/// The resident set size of this process (the test binary, which runs the
/// server in-process), in bytes.
///
/// # Panics
/// When `/proc/self/status` cannot be read (not Linux).
pub fn rss_bytes() -> u64 {
    status_kb("VmRSS").expect("VmRSS in /proc/self/status") * 1024
}

/// A field of this process's `/proc/self/status` given in kB (`VmRSS`,
/// `VmHWM`, …); `None` when it cannot be read.
pub fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// Bytes held by the files under `path`, recursively (0 when it is absent).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Most bytes of log kept for inspection; beyond it lines are counted only.
const LOG_KEEP_BYTES: usize = 256 << 20;

/// Everything the host logged in this test binary (every level), once
/// [`log_capture`] was called. Tests in one binary share it: filter lines by
/// a plugin or route name only that test uses.
#[derive(Default)]
pub struct LogCapture {
    kept: Mutex<Vec<u8>>,
    total: std::sync::atomic::AtomicU64,
}

impl LogCapture {
    /// Bytes of the logged lines that contain `needle`.
    pub fn bytes_matching(&self, needle: &str) -> usize {
        self.lines_matching(needle)
            .iter()
            .map(|l| l.len() + 1)
            .sum()
    }

    /// The logged lines that contain `needle`.
    pub fn lines_matching(&self, needle: &str) -> Vec<String> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&kept)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Bytes logged in all, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn push(&self, bytes: &[u8]) {
        self.total.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let room = LOG_KEEP_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }
}

/// A writer into the shared capture.
pub struct CaptureWriter(&'static LogCapture);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install (once per test binary) a global tracing subscriber that writes
/// every event of enrichd's own targets (`enrichd::…`), at every level, as
/// plain text into the returned capture.
///
/// # Panics
/// When another global subscriber was installed first.
pub fn log_capture() -> &'static LogCapture {
    static CAPTURE: OnceLock<&'static LogCapture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static LogCapture = Box::leak(Box::default());
        tracing_subscriber::fmt()
            // enrichd's own events only, at every level: the `log` records
            // bridged in from dependencies (cranelift traces each compile)
            // would fill the capture with noise.
            .with_env_filter(tracing_subscriber::EnvFilter::new("enrichd=trace"))
            .with_ansi(false)
            .with_writer(move || CaptureWriter(capture))
            .try_init()
            .expect("no other global subscriber in this test binary");
        capture
    })
}
