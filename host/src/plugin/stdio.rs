//! Capture of a guest's stdout and stderr.
//!
//! Guests get no terminal: what they print is kept in a bounded buffer per
//! call and written to tracing afterwards, tagged with the plugin and the
//! delivery. Bytes beyond the bound are counted and discarded without
//! failing the write, so a chatty or hostile plugin neither fills the host's
//! memory nor turns into a trap because of its logging. The tail of stderr
//! also tells why a guest panicked (a panic becomes a trap whose own message
//! says only "unreachable").

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
    fn the_last_line_is_the_panic_message_not_the_backtrace_hint() {
        let c = Capture::default();
        c.push(b"thread '<unnamed>' panicked at src/lib.rs:9:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n");
        assert_eq!(c.last_line().as_deref(), Some("boom"));
        assert_eq!(Capture::default().last_line(), None);
    }
}
