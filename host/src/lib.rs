//! # enrichd
//!
//! An Emailgistics webhook endpoint that enriches incoming messages with
//! third-party plugins compiled to WebAssembly. A delivery is authenticated,
//! parsed, handed to the route's plugin chain (each plugin sandboxed in its
//! own fresh instance), and the plugins' actions are validated and merged,
//! in order, into the response envelope.
//!
//! # Layout
//!
//! - [`cli`]: command-line arguments.
//! - [`config`]: the TOML config, validated into a resolved [`config::Config`].
//! - [`app`]: builds a running enrichd from a config (store, CRM, plugins, routes).
//! - [`server`]: the hyper server: routing, body limits, status codes, shutdown.
//! - [`auth`]: constant-time bearer-secret checks.
//! - [`payload`]: parsing Emailgistics delivery payloads.
//! - [`plugin`]: the wasmtime runtime: engine, bindings, host imports, sandbox.
//! - [`chain`]: running a route's chain, merging actions, the envelope and record.
//! - [`actions`]: the Emailgistics action types as serialized in the envelope.
//! - [`validate`]: per-action validation against the Emailgistics reference.
//! - [`crm`]: CRM sources behind the `crm` import (embedded, HTTP) and their cache.
//! - [`storage`]: every piece of state behind async ports; sled and Redis backends.
//! - [`idempotency`]: one answer per delivery, across copies and hosts.
//! - [`singleflight`]: one caller works per key, concurrent callers wait for its result.
//! - [`engagelab`]: EngageLab callbacks: verification, the queue's worker.
//! - [`admin`]: the admin listener (delivery log, stats), loopback by default.
//! - [`text`]: cutting untrusted text to a byte bound, marking the cut.
//! - [`record`]: the delivery record, bounded in bytes for the log and the store.

pub mod actions;
pub mod admin;
pub mod app;
pub mod auth;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crm;
pub mod engagelab;
pub mod idempotency;
pub mod payload;
pub mod plugin;
pub mod record;
pub mod server;
pub mod singleflight;
pub mod storage;
pub mod text;
pub mod validate;
