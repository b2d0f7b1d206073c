//! The public listener's router: `/healthz`, then the route's source-IP
//! allowlist ([`crate::source_ip`]; 403 before the handler reads anything),
//! then the EngageLab routes, then the Emailgistics routes, else 404. Each
//! handler gets its own state.
//!
//! What a sender can make the host hold is bounded by the transport under
//! it ([`crate::http`]): open connections (`max_connections`, plus a small
//! reserve that answers only `/healthz`), the time to send a request head
//! and a body (`body_read_timeout_ms`, 408), and the body's size
//! (`max_body_bytes`, 413); each handler reads the body within its own
//! budget (the delivery budget; EngageLab's 3 s).
//!
//! The routes and allowlists are the current [`Generation`]'s, taken once
//! when a request arrives: a reload during a delivery does not change the
//! route, secrets or chain it runs on.

use std::sync::Arc;

use arc_swap::ArcSwap;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
// The budgets count from the arrival on tokio's clock.
use tokio::time::Instant;

use crate::emailgistics::handler::{self, DeliveryState};
use crate::engagelab::{self, EventState};
use crate::http::{error, json, method_not_allowed, Body, PeerAddr, HEALTHZ_PATH};

use super::reload::Generation;

/// Routes a request to the handler of its path. Cloning shares the states.
#[derive(Clone)]
pub struct Router {
    deliveries: Arc<DeliveryState>,
    events: Arc<EventState>,
    current: Arc<ArcSwap<Generation>>,
}

impl Router {
    /// A router over the delivery and EngageLab handlers' states, serving
    /// the routes of whichever generation is `current`.
    pub fn new(
        deliveries: Arc<DeliveryState>,
        events: Arc<EventState>,
        current: Arc<ArcSwap<Generation>>,
    ) -> Self {
        Router {
            deliveries,
            events,
            current,
        }
    }

    /// The route's allowlist refusing this request, if it has one that
    /// does: checked before the handler reads the body or the secret.
    fn refused(
        generation: &Generation,
        path: &str,
        req: &Request<Incoming>,
    ) -> Option<Response<Body>> {
        let filter = generation.sources.iter().find(|f| f.route() == path)?;
        filter.check(req.extensions().get::<PeerAddr>(), req.headers())
    }

    /// Answer one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let arrived = Instant::now();
        let path = req.uri().path().to_owned();
        if path == HEALTHZ_PATH {
            return match *req.method() {
                Method::GET | Method::HEAD => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
                _ => method_not_allowed("GET, HEAD"),
            };
        }
        // Once per request: it finishes on this generation.
        let generation = self.current.load_full();
        if let Some(refused) = Self::refused(&generation, &path, &req) {
            return refused;
        }
        if let Some(route) = generation.event_route(&path) {
            return engagelab::receive(&self.events, route, req, arrived).await;
        }
        if let Some(route) = generation.route(&path) {
            return handler::handle(&self.deliveries, route, req, arrived).await;
        }
        error(StatusCode::NOT_FOUND, "no such route")
    }
}
