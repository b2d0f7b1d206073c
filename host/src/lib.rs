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
//! Dependencies point one way, from the top of this list down:
//! `cli → app → {server, http, emailgistics, engagelab, admin} → {plugin,
//! crm, idempotency} → storage`; `config` resolves the file into
//! the domain types (it depends on them, they not on it).
//!
//! - [`cli`]: command-line arguments.
//! - [`app`]: builds a running enrichd from a config (store, CRM, plugins, routes).
//! - [`server`]: routing, the answer; its background jobs.
//! - [`admin`]: the admin listener (delivery log, stats), loopback by default.
//! - [`http`]: the transport, knowing nothing of webhooks: accept loop
//!   (generic over the accepted stream), connection cap, body limits and
//!   timeouts, shared JSON answers.
//! - [`emailgistics`]: the Emailgistics contract: auth, payload, actions,
//!   validation, conversion to and from the plugins' WIT types, the chain
//!   and its envelope, the delivery record.
//! - [`engagelab`]: EngageLab callbacks: verification, the queue's worker.
//! - [`config`]: the TOML config, validated into a resolved [`config::Config`].
//! - [`plugin`]: the wasmtime runtime: engine, bindings, host imports,
//!   sandbox, and the plugin policy types ([`plugin::policy`]).
//! - [`crm`]: CRM sources behind the `crm` import (embedded, HTTP) and their cache.
//! - [`idempotency`]: one answer per delivery, across copies and hosts.
//! - [`singleflight`]: one caller works per key, concurrent callers wait for its result.
//! - [`storage`]: every piece of state behind async ports; sled and Redis backends.
//! - [`supervisor`]: the background jobs: named, restarted after a panic, one shutdown.
//! - [`clock`]: wall-clock milliseconds on tokio's clock.
//! - [`text`]: cutting untrusted text to a byte bound, marking the cut.

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crm;
pub mod emailgistics;
pub mod engagelab;
pub mod http;
pub mod idempotency;
pub mod plugin;
pub mod server;
pub mod singleflight;
pub mod storage;
pub mod supervisor;
pub mod text;
