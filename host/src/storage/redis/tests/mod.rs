//! Tests of the Redis backend against a real Redis: each port on one host,
//! and the cross-host guarantees with two `Storage` values on one Redis
//! (two hosts), plus a private Redis stopped and restarted under a host.

mod answers;
mod conformance;
mod events;
mod kv;
mod outage;

use crate::storage::DeliveryKey;
use crate::storage::StoredDelivery;

/// An answer for `key` stored at `at`, body naming `who`.
fn answer(key: &DeliveryKey, at: u64, who: &str) -> StoredDelivery {
    StoredDelivery {
        route: key.route.clone(),
        id: key.id.clone(),
        stored_at_ms: at,
        status: 200,
        body: format!("{{\"by\":\"{who}\", \"x\" : 1}}"),
        record: serde_json::json!({"message": format!("answered by {who}")}),
    }
}

/// Unix ms now.
fn now_ms() -> u64 {
    crate::clock::Clock::new().now_ms()
}
