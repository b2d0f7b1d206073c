//! The HTTP transport, knowing nothing of webhooks: the accept loop with its
//! graceful drain ([`serve`]), the connection cap and its health reserve
//! ([`ConnectionCap`]), the header and body timeouts and size limit
//! ([`read_body`]), the shared JSON answers ([`answers`]), each
//! request's TCP peer ([`PeerAddr`], in its extensions) for the routes to
//! judge, and HTTPS ([`tls`]).
//!
//! The accept loop is generic over the accepted stream ([`Accept`]): the
//! TLS acceptor wraps a TCP listener without any handler knowing.

pub mod answers;
mod body;
mod limits;
mod serve;
pub mod tls;

use bytes::Bytes;
use http_body_util::Full;

pub use answers::{error, json, method_not_allowed, too_large, unauthorized};
pub use body::{read_body, BodyLimits, Deadline};
pub use limits::{ConnectionCap, HEALTH_RESERVE_CONNECTIONS};
pub use serve::{serve, serve_capped, Accept, HEADER_READ_TIMEOUT, RESERVE_HEADER_READ_TIMEOUT};

/// Liveness endpoint; the only path a reserve connection may ask for.
pub const HEALTHZ_PATH: &str = "/healthz";

/// The TCP peer of a request's connection, put in the request's extensions
/// by the accept loop; the route decides what it means (see
/// [`crate::source_ip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The body of every answer: all of it is known before it is sent.
pub type Body = Full<Bytes>;

/// An error and its causes on one line ("client error (Connect): tcp connect
/// error: Connection refused"); hyper's top-level message alone says
/// little. A cause repeating the line before it is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if line != last {
            text.push_str(": ");
            text.push_str(&line);
        }
        last = line;
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
