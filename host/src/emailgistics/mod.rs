//! Emailgistics deliveries: everything that knows the Emailgistics webhook
//! contract, in one folder as [`crate::engagelab`] is for EngageLab.
//!
//! - [`auth`]: constant-time bearer-secret checks.
//! - [`payload`]: parsing delivery payloads, with every field length-capped.
//! - [`convert`]: a delivery into the plugins' WIT record, a plugin's WIT
//!   output into [`actions`] (the plugin runtime knows WIT types only).
//! - [`actions`]: the action types as serialized in the envelope.
//! - [`validate`]: per-action validation against the Emailgistics reference.
//! - [`chain`]: running a route's chain, merging actions into the envelope.
//! - [`record`]: the delivery record, bounded in bytes for the log and the
//!   store.
//! - [`handler`]: the delivery handler: auth, body, the idempotency
//!   protocol, the answer and its replay.
//! - [`metrics`]: what a delivery adds to the Prometheus metrics.

pub mod actions;
pub mod auth;
pub mod chain;
pub mod convert;
pub mod handler;
pub mod metrics;
pub mod payload;
pub mod record;
pub mod validate;

pub use handler::{DeliveryState, Route};
