//! The accept loop: HTTP/1 connections within the connection cap, header
//! timeouts, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::answers::over_capacity;
use super::{Body, ConnectionCap, PeerAddr, HEALTHZ_PATH};

/// Time a client gets to send the request head; stops idle or slow-loris
/// connections from holding sockets.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a reserve connection gets to send its request head: a probe sends
/// it at once, and a slow one must not keep the small reserve full.
pub const RESERVE_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (usually EMFILE) instead of spinning; the
/// descriptors of finishing connections come back meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A source of connections: a TCP listener, or later a TLS acceptor around
/// one. `accept` runs on the accept loop, so it must only take the next
/// connection; slow per-connection work (a TLS handshake) belongs in the
/// stream's first reads, which run on the connection's own task.
pub trait Accept: Send {
    /// An accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer.
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// Accept HTTP/1 connections on `listener` and answer each request with
/// `handler` until `shutdown`, then wait up to `grace` for open connections.
/// No connection cap (the admin listener is loopback-only by default).
pub async fn serve<A, F, Fut>(
    listener: A,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handler: F,
) -> std::io::Result<()>
where
    A: Accept,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_capped(
        listener,
        shutdown,
        grace,
        &ConnectionCap::unbounded(),
        handler,
    )
    .await
}

/// [`serve`], with at most `cap` connections open (see [`ConnectionCap`]).
pub async fn serve_capped<A, F, Fut>(
    mut listener: A,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    cap: &ConnectionCap,
    handler: F,
) -> std::io::Result<()>
where
    A: Accept,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Reserve connections answer one request and close, quickly.
    let mut reserve_http = http.clone();
    reserve_http
        .keep_alive(false)
        .header_read_timeout(RESERVE_HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Some((permit, reserve)) = cap.admit() else {
                    // Dropping the stream closes it: the descriptor is back at once.
                    tracing::debug!(%peer, max_connections = cap.max(), "connection refused: max_connections and the health reserve are full");
                    continue;
                };
                let handler = handler.clone();
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let fut = (!reserve || req.uri().path() == HEALTHZ_PATH).then(|| handler(req));
                    async move {
                        Ok::<_, Infallible>(match fut {
                            Some(fut) => fut.await,
                            None => over_capacity(),
                        })
                    }
                });
                let builder = if reserve { &reserve_http } else { &http };
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}
