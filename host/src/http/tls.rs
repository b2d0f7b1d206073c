//! HTTPS for a listener: a TLS acceptor around any [`Accept`] whose
//! handshake runs on the connection's own task, under a deadline, and whose
//! certificate ([`Certificates`]) can be replaced while it serves. What the
//! listener speaks (TLS with which settings, or plain) is itself swappable
//! ([`TlsSwitch`]), so a reload can change it without re-binding.
//!
//! The accept loop only takes the TCP connection; the handshake happens in
//! the stream's first reads ([`TlsStream`]), so a client that connects and
//! never speaks holds one slot of the connection cap for at most the
//! handshake timeout, and never the accept loop.

mod certs;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub use certs::{CertFiles, Certificates, TlsError};

use super::Accept;

/// Time a client gets to complete the TLS handshake, from when its TCP
/// connection is accepted. A handshake is two round trips and some
/// milliseconds of crypto; 10 s covers a slow mobile link many times over,
/// and bounds what a client that connects and never speaks can hold (one
/// slot of `max_connections`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The lowest TLS version a listener accepts. Older ones (SSL 3, TLS 1.0
/// and 1.1) are not offered at all: rustls does not implement them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A listener's TLS settings, resolved (paths absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Where the certificate and key are read from (at start and on reload).
    pub files: CertFiles,
    /// The lowest version accepted.
    pub min_version: MinVersion,
    /// Time a client gets to complete its handshake.
    pub handshake_timeout: Duration,
}

/// The crypto provider every TLS piece of enrichd uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration of a listener presenting `certs`: the
/// versions `min` allows, no client certificates, ALPN `http/1.1` (the only
/// protocol the server speaks; a client offering only `h2` is refused in
/// the handshake rather than misread).
pub fn server_config(
    certs: Arc<Certificates>,
    min: MinVersion,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How a listener's new connections are served: TLS with a rustls
/// configuration and a handshake deadline.
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    /// Serve TLS with `config`; a handshake not done within
    /// `handshake_timeout` ends its connection.
    pub fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> Self {
        TlsAcceptor {
            acceptor: config.into(),
            handshake_timeout,
        }
    }
}

/// What a [`TlsListener`] speaks to its next connections: TLS, or plain
/// HTTP when empty. Storing a new value changes what the next accepted
/// connection must speak, on the same socket; open connections keep what
/// they started with.
pub type TlsSwitch = Arc<ArcSwapOption<TlsAcceptor>>;

/// A listener whose connections speak TLS or not, as its [`TlsSwitch`]
/// says when each is accepted; a TLS one is a [`TlsStream`] whose
/// handshake runs on first use.
pub struct TlsListener<A> {
    inner: A,
    switch: TlsSwitch,
}

impl<A> TlsListener<A> {
    /// Serve `inner`'s connections as `switch` says.
    pub fn new(inner: A, switch: TlsSwitch) -> Self {
        TlsListener { inner, switch }
    }
}

impl<A: Accept> Accept for TlsListener<A> {
    type Stream = MaybeTls<A::Stream>;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        let stream = match self.switch.load_full() {
            None => MaybeTls::Plain(stream),
            Some(tls) => MaybeTls::Tls(TlsStream {
                state: State::Handshake(
                    Box::new(tls.acceptor.accept(stream)),
                    Box::pin(tokio::time::sleep(tls.handshake_timeout)),
                ),
            }),
        };
        Ok((stream, peer))
    }
}

/// A connection accepted by a [`TlsListener`]: plain, or TLS.
pub enum MaybeTls<S> {
    /// Plain HTTP (no `[tls]` when it was accepted).
    Plain(S),
    /// HTTPS.
    Tls(TlsStream<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A server-side TLS connection whose handshake is driven by its first
/// read or write, and fails with `TimedOut` past its deadline.
pub struct TlsStream<S> {
    state: State<S>,
}

enum State<S> {
    Handshake(Box<tokio_rustls::Accept<S>>, Pin<Box<Sleep>>),
    Ready(Box<tokio_rustls::server::TlsStream<S>>),
    Failed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// The established connection, once the handshake is done.
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<S>>> {
        if let State::Handshake(accept, deadline) = &mut self.state {
            let done = match Pin::new(accept.as_mut()).poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
                Poll::Pending => return Poll::Pending,
            };
            match done {
                Ok(stream) => self.state = State::Ready(Box::new(stream)),
                Err(e) => {
                    self.state = State::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS handshake failed",
            ))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            // Nothing was established: dropping the stream closes the socket.
            State::Handshake(..) | State::Failed => Poll::Ready(Ok(())),
        }
    }
}
