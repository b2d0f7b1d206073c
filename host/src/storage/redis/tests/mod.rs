//! Tests of the Redis backend against a real Redis: each port on one host,
//! and the cross-host guarantees with two `Storage` values on one Redis
//! (two hosts), plus a private Redis stopped and restarted under a host.

mod answers;
mod conformance;
mod events;
mod kv;
mod outage;

// The suite's helpers serve these cases too.
use crate::storage::conformance::{answer, limits, now_ms};
