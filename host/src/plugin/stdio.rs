//! Capture of a guest's stdout and stderr.
//!
//! Guests get no terminal: what they print is kept in a bounded buffer per
//! call and written to tracing afterwards, tagged with the plugin and the
//! delivery. Bytes beyond the bound are counted and discarded without
//! failing the write, so a chatty or hostile plugin neither fills the host's
//! memory nor turns into a trap because of its logging. The tail of stderr
//! also tells why a guest panicked (a panic becomes a trap whose own message
//! says only "unreachable").
//!
//! Everything a guest has logged (the `log` import, stdout, stderr) shares
//! one per-call [`LogBudget`] of lines and bytes, and its control characters
//! are escaped ([`escape_controls`]) so a guest can neither forge log lines
//! nor send terminal escape sequences to whoever reads the log.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output kept per stream and call. Enough for a panic message
/// with a backtrace-less location and a page of debug prints.
pub const MAX_CAPTURED_BYTES: usize = 16 * 1024;

/// How much a guest may write in one `write` call: the permit WASI streams
/// usually hand out.
const WRITE_PERMIT: usize = 64 * 1024;

/// Guest text made safe for a one-line log record: `\n`, `\r` and `\t`
/// become `\\n`, `\\r` and `\\t`; every other control character (ANSI ESC,
/// NUL, DEL, C1) and the Unicode line and paragraph separators become
/// `\\u{..}`. Text without any is returned as is.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// What one call may still write to the host's log, and what it was
/// refused. Shared by the `log` import and the forwarding of stdout and
/// stderr, so a plugin's log output per call is bounded as a whole.
#[derive(Debug, Clone)]
pub struct LogBudget {
    max_lines: usize,
    max_bytes: usize,
    lines: usize,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl LogBudget {
    /// A budget of `max_lines` lines and `max_bytes` bytes of guest text.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        LogBudget {
            max_lines,
            max_bytes,
            lines: 0,
            bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    /// Whether no further line can be logged (checked before any work is
    /// spent on a line).
    pub fn exhausted(&self) -> bool {
        self.lines >= self.max_lines || self.bytes >= self.max_bytes
    }

    /// Take room for one line of `len` bytes: `true` when it fits (the
    /// caller logs it), `false` when it is counted as dropped instead.
    pub fn take(&mut self, len: usize) -> bool {
        if self.lines < self.max_lines && len <= self.max_bytes - self.bytes.min(self.max_bytes) {
            self.lines += 1;
            self.bytes += len;
            true
        } else {
            self.drop_line(len);
            false
        }
    }

    /// Count a line that was not logged.
    pub fn drop_line(&mut self, len: usize) {
        self.dropped_lines += 1;
        self.dropped_bytes += len as u64;
    }

    /// Count bytes that were not logged and not split into lines (output
    /// beyond the capture bound).
    pub fn drop_bytes(&mut self, len: usize) {
        self.dropped_bytes += len as u64;
    }

    /// Lines and bytes dropped so far.
    pub fn dropped(&self) -> (u64, u64) {
        (self.dropped_lines, self.dropped_bytes)
    }

    /// The limits, for messages: (max lines, max bytes).
    pub fn limits(&self) -> (usize, usize) {
        (self.max_lines, self.max_bytes)
    }
}

#[derive(Default)]
struct Buffer {
    kept: Vec<u8>,
    discarded: usize,
}

/// One captured stream; clones share the buffer.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Buffer>>);

impl Capture {
    fn push(&self, bytes: &[u8]) {
        let mut b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = MAX_CAPTURED_BYTES.saturating_sub(b.kept.len());
        let take = room.min(bytes.len());
        b.kept.extend_from_slice(&bytes[..take]);
        b.discarded += bytes.len() - take;
    }

    /// The last meaningful line captured so far, trimmed: for a Rust guest
    /// that panicked, the panic message. Rust's trailing "note: run with
    /// `RUST_BACKTRACE=1`…" hint is skipped: a guest cannot act on it.
    pub fn last_line(&self) -> Option<String> {
        let b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&b.kept)
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .map(str::to_owned)
    }

    /// The captured text (lossy UTF-8) and how many bytes were discarded.
    pub fn take(&self) -> (String, usize) {
        let mut b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let text = String::from_utf8_lossy(&b.kept).into_owned();
        let discarded = b.discarded;
        *b = Buffer::default();
        (text, discarded)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_beyond_the_bound_is_counted_and_discarded() {
        let c = Capture::default();
        c.push(b"hello\n");
        assert_eq!(c.take(), ("hello\n".to_owned(), 0));
        c.push(&vec![b'x'; MAX_CAPTURED_BYTES + 10]);
        let (text, discarded) = c.take();
        assert_eq!(text.len(), MAX_CAPTURED_BYTES);
        assert_eq!(discarded, 10);
    }

    #[test]
    fn control_characters_are_escaped_so_a_line_stays_one_line() {
        assert!(matches!(escape_controls("plain text é"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\n2026-01-01T00:00:00Z  INFO enrichd: forged\r\tx"),
            "a\\n2026-01-01T00:00:00Z  INFO enrichd: forged\\r\\tx"
        );
        assert_eq!(
            escape_controls("\u{1b}[31mred\u{0}\u{7f}\u{85}\u{2028}"),
            "\\u{1b}[31mred\\u{0}\\u{7f}\\u{85}\\u{2028}"
        );
        assert!(!escape_controls("x\ny\rz\u{1b}")
            .chars()
            .any(char::is_control));
    }

    #[test]
    fn the_log_budget_counts_lines_and_bytes_and_what_it_dropped() {
        let mut b = LogBudget::new(3, 10);
        assert!(b.take(4));
        assert!(b.take(4));
        assert!(!b.take(4), "bytes: 8 + 4 > 10");
        assert!(!b.exhausted());
        assert!(b.take(2));
        assert!(b.exhausted());
        assert!(!b.take(0), "lines: 3 used");
        b.drop_bytes(100);
        assert_eq!(b.dropped(), (2, 104));
        assert_eq!(b.limits(), (3, 10));
    }

    #[test]
    fn the_last_line_is_the_panic_message_not_the_backtrace_hint() {
        let c = Capture::default();
        c.push(b"thread '<unnamed>' panicked at src/lib.rs:9:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n");
        assert_eq!(c.last_line().as_deref(), Some("boom"));
        assert_eq!(Capture::default().last_line(), None);
    }
}
