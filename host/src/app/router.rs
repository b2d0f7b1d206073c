//! The public listener's router: `/healthz`, then the EngageLab routes,
//! then the Emailgistics routes, else 404. Each handler gets its own state.
//!
//! What a sender can make the host hold is bounded by the transport under
//! it ([`crate::http`]): open connections (`max_connections`, plus a small
//! reserve that answers only `/healthz`), the time to send a request head
//! and a body (`body_read_timeout_ms`, 408), and the body's size
//! (`max_body_bytes`, 413); each handler reads the body within its own
//! budget (the delivery budget; EngageLab's 3 s).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
// The budgets count from the arrival on tokio's clock.
use tokio::time::Instant;

use crate::emailgistics::handler::{self, DeliveryState};
use crate::engagelab::{self, EventState};
use crate::http::{error, json, method_not_allowed, Body, HEALTHZ_PATH};

/// Routes a request to the handler of its path. Cloning shares the states.
#[derive(Clone)]
pub struct Router {
    deliveries: Arc<DeliveryState>,
    events: Arc<EventState>,
}

impl Router {
    /// A router over the delivery and EngageLab handlers' states.
    pub fn new(deliveries: Arc<DeliveryState>, events: Arc<EventState>) -> Self {
        Router { deliveries, events }
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
        if let Some(route) = self.events.route(&path) {
            return engagelab::receive(&self.events, route, req, arrived).await;
        }
        if let Some(route) = self.deliveries.route(&path) {
            return handler::handle(&self.deliveries, route, req, arrived).await;
        }
        error(StatusCode::NOT_FOUND, "no such route")
    }
}
