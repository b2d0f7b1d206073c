//! Source-IP allowlists: which client addresses a route answers.
//!
//! A route with `allow_ips` answers only clients inside one of its CIDRs;
//! others get 403 before the body is read or the secret is checked. The
//! client is the TCP peer, unless the peer is one of the top-level
//! `trusted_proxies`: then it is the rightmost address of
//! `X-Forwarded-For` that is not itself a trusted proxy (the hops to its
//! right were added by proxies we trust; anything to its left was written
//! by the client and may be forged). A malformed `X-Forwarded-For` from a
//! trusted proxy is answered 400: the request is broken, not refused by
//! policy, and the proxy's operator should see the difference.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:127.0.0.2`, what a dual-stack
//! listener reports for an IPv4 client) are matched as the IPv4 address.
//!
//! A leaf: it knows the HTTP request and answers, nothing of webhooks.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use ipnet::IpNet;
use tokio::time::Instant;

use crate::http::{error, Body, PeerAddr};

/// The header a proxy appends the address it received from to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// Refusal log lines per route per [`LOG_WINDOW`]: enough to see who is
/// knocking; a flood of refused requests then costs one summary line per
/// window, not one line each (the counters keep the exact count).
pub const LOG_LINES_PER_WINDOW: u64 = 10;
/// The window of [`LOG_LINES_PER_WINDOW`].
pub const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Most bytes of a refused request's `X-Forwarded-For` put in the log
/// line: a few hops' worth; the header is the client's text.
const MAX_LOGGED_HEADER_BYTES: usize = 256;

/// A list of CIDRs (`203.0.113.7/32`, `2001:db8::/32`; a bare address is
/// one host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cidrs(Vec<IpNet>);

/// A CIDR that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{entry:?} is not a CIDR (e.g. \"203.0.113.7/32\", \"2001:db8::/32\") nor an IP address")]
pub struct BadCidr {
    /// The entry as written.
    pub entry: String,
}

impl Cidrs {
    /// Parse every entry; a bare address is a one-host network.
    pub fn parse(entries: &[String]) -> Result<Cidrs, BadCidr> {
        entries
            .iter()
            .map(|e| {
                let e = e.trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| BadCidr {
                        entry: e.to_owned(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(Cidrs)
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 address) is
    /// inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as written back (for summaries).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// Why a request's source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client is not in the route's `allow_ips` (403).
    NotAllowed,
    /// A trusted proxy sent an `X-Forwarded-For` that does not parse (400).
    BadForwardedFor,
}

/// The client a request is from: the peer, or, when the peer is a trusted
/// proxy, the rightmost `X-Forwarded-For` hop that is not a trusted proxy
/// (the leftmost hop if all are; the peer if the header is absent).
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, proxies: &Cidrs) -> Result<IpAddr, Refusal> {
    let peer = peer.to_canonical();
    if !proxies.contains(peer) {
        return Ok(peer);
    }
    let mut hops = Vec::new();
    // Several headers are one list, in order (RFC 9110 §5.3).
    for value in headers.get_all(FORWARDED_FOR) {
        let value = value.to_str().map_err(|_| Refusal::BadForwardedFor)?;
        for hop in value.split(',') {
            let hop = hop.trim().parse::<IpAddr>();
            hops.push(hop.map_err(|_| Refusal::BadForwardedFor)?.to_canonical());
        }
    }
    Ok(hops
        .iter()
        .rev()
        .find(|hop| !proxies.contains(**hop))
        .or(hops.first())
        .copied()
        .unwrap_or(peer))
}

/// One route's allowlist, its refusal counters and its log budget.
#[derive(Debug)]
pub struct SourceFilter {
    route: String,
    allow: Cidrs,
    proxies: Cidrs,
    not_allowed: AtomicU64,
    bad_forwarded_for: AtomicU64,
    log: LogBudget,
}

impl SourceFilter {
    /// The filter of `route`: clients in `allow`, behind `proxies`.
    pub fn new(route: &str, allow: Cidrs, proxies: Cidrs) -> SourceFilter {
        SourceFilter {
            route: route.to_owned(),
            allow,
            proxies,
            not_allowed: AtomicU64::default(),
            bad_forwarded_for: AtomicU64::default(),
            log: LogBudget::new(LOG_LINES_PER_WINDOW, LOG_WINDOW),
        }
    }

    /// The route's path.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// `None` if the request may go on; else the answer: 403 (not allowed),
    /// 400 (malformed `X-Forwarded-For` from a trusted proxy). A request
    /// without a [`PeerAddr`] (not from the accept loop) is refused.
    pub fn check(&self, peer: Option<&PeerAddr>, headers: &HeaderMap) -> Option<Response<Body>> {
        let refusal = match peer {
            None => Err(Refusal::NotAllowed),
            Some(PeerAddr(peer)) => client_addr(peer.ip(), headers, &self.proxies),
        }
        .and_then(|client| {
            if self.allow.contains(client) {
                Ok(client)
            } else {
                Err(Refusal::NotAllowed)
            }
        })
        .err()?;
        let (counter, status, message) = match refusal {
            Refusal::NotAllowed => (
                &self.not_allowed,
                StatusCode::FORBIDDEN,
                "source address not allowed",
            ),
            Refusal::BadForwardedFor => (
                &self.bad_forwarded_for,
                StatusCode::BAD_REQUEST,
                "malformed X-Forwarded-For from a trusted proxy",
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.log_refusal(peer.map(|p| p.0), headers, status);
        let mut res = error(status, message);
        // The body is not read: the connection cannot be reused.
        res.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        Some(res)
    }

    fn log_refusal(&self, peer: Option<SocketAddr>, headers: &HeaderMap, status: StatusCode) {
        let Some(skipped) = self.log.admit(Instant::now()) else {
            return;
        };
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        // The header is the client's text: cut so a line stays a line.
        let forwarded = headers
            .get(FORWARDED_FOR)
            .map(|v| {
                let v = String::from_utf8_lossy(v.as_bytes());
                crate::text::cut(
                    &v,
                    MAX_LOGGED_HEADER_BYTES,
                    "the log's header limit",
                    MAX_LOGGED_HEADER_BYTES,
                )
            })
            .unwrap_or_default();
        tracing::warn!(route = %self.route, %peer, forwarded_for = %forwarded, status = status.as_u16(), not_logged_before = skipped, "request refused by allow_ips");
    }

    /// The counters, as JSON for `GET /stats`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "notAllowed": self.not_allowed.load(Ordering::Relaxed),
            "badForwardedFor": self.bad_forwarded_for.load(Ordering::Relaxed),
        })
    }
}

/// At most `lines` log lines per `window`; the first line of a window says
/// how many were left out in the windows before.
#[derive(Debug)]
pub struct LogBudget {
    lines: u64,
    window: Duration,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    started: Option<Instant>,
    used: u64,
    skipped: u64,
}

impl LogBudget {
    /// A budget of `lines` per `window`.
    pub fn new(lines: u64, window: Duration) -> LogBudget {
        LogBudget {
            lines,
            window,
            state: Mutex::new(BudgetState {
                started: None,
                used: 0,
                skipped: 0,
            }),
        }
    }

    /// `Some(lines left out since the last logged one)` if a line may be
    /// logged at `now`; `None` (and one more left out) if not.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.started
            .is_none_or(|t| now.duration_since(t) >= self.window)
        {
            s.started = Some(now);
            s.used = 0;
        }
        if s.used >= self.lines {
            s.skipped += 1;
            return None;
        }
        s.used += 1;
        Some(std::mem::take(&mut s.skipped))
    }
}

#[cfg(test)]
mod tests;
