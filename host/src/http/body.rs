//! Reading a request body within a size limit and two deadlines: the body's
//! own read timeout (a trickling body cannot hold the connection for a
//! handler's whole budget) and the end of the handler's budget.

use std::time::Duration;

// Every deadline is on tokio's clock, so timers and deadlines agree (also
// under tokio's test clock).
use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::answers::{error, too_large};
use super::Body;

/// What a handler accepts of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body, in bytes (`max_body_bytes`; more is 413).
    pub max_bytes: usize,
    /// Time the sender gets to send the body once the head is read
    /// (`body_read_timeout_ms`; later is 408).
    pub read_timeout: Duration,
}

/// The end of the handler's own budget, and how a 408 names it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When the budget ends.
    pub at: Instant,
    /// The budget's length, for the message.
    pub budget: Duration,
    /// The budget's name, for the message (e.g. `"the delivery budget"`).
    pub name: &'static str,
}

impl Deadline {
    /// A budget of `budget` named `name`, counted from `from`.
    pub fn after(from: Instant, budget: Duration, name: &'static str) -> Self {
        Deadline {
            at: from + budget,
            budget,
            name,
        }
    }
}

/// Read the body within `limits.max_bytes`, within `limits.read_timeout`
/// from now and before `deadline`, whichever ends first. The error is the
/// answer to give: 413, 408 (naming the limit that ended it) or 400.
pub async fn read_body(
    req: Request<Incoming>,
    limits: &BodyLimits,
    deadline: &Deadline,
) -> Result<Bytes, Response<Body>> {
    let limit = limits.max_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let body_end = Instant::now() + limits.read_timeout;
    let collected = tokio::time::timeout_at(
        body_end.min(deadline.at),
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    match collected {
        Err(_) => {
            let which = if body_end <= deadline.at {
                format!("body_read_timeout_ms = {}", limits.read_timeout.as_millis())
            } else {
                format!("{} of {} ms", deadline.name, deadline.budget.as_millis())
            };
            let mut res = error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("request body not received in time ({which})"),
            );
            // The rest of the body is not read: the connection cannot be reused.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(res)
        }
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read request body: {e}"),
        )),
    }
}
