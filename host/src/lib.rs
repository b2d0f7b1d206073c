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
//! Dependencies point one way, from the top of this list down, with no
//! cycle between files or folders: `cli → app → {admin, emailgistics,
//! engagelab} → {idempotency, plugin → crm} → storage` (`admin` reads the
//! EngageLab counters, so it sits above `engagelab`); `http`, `source_ip`,
//! `metrics`, `clock`, `text` and `singleflight` are leaves any layer may use. `config`
//! resolves the file into the domain types: it depends on them, they not
//! on it, and only `cli` and `app` name it. Only `app` sees the whole: each
//! handler gets a narrow state of its own.
//!
//! - [`cli`]: command-line arguments.
//! - [`app`]: the composition root: builds a running enrichd from a config
//!   (storage, CRM, plugins, routes), gives each handler its narrow state,
//!   routes the public listener, runs the background jobs under one
//!   supervisor, swaps in a reloaded config ([`app::reload`]) and shuts
//!   everything down in order.
//! - [`config`]: the TOML config, validated into a resolved [`config::Config`].
//! - [`admin`]: the admin listener (delivery log, stats, and the Admin view
//!   of [`admin::view`]: HTML under `/ui`), loopback by default.
//! - [`emailgistics`]: the Emailgistics contract: auth, payload, actions,
//!   validation, conversion to and from the plugins' WIT types, the chain
//!   and its envelope, the delivery record, and the delivery handler.
//! - [`engagelab`]: EngageLab callbacks: verification, the receiving
//!   handler, the queue's worker.
//! - [`http`]: the transport, knowing nothing of webhooks: accept loop
//!   (generic over the accepted stream), connection cap, body limits and
//!   timeouts, shared JSON answers, TLS ([`http::tls`]: rustls, the
//!   handshake under a deadline, certificates swapped while serving).
//! - [`idempotency`]: one answer per delivery, across copies and hosts.
//! - [`plugin`]: the wasmtime runtime: engine, its bounded cache of
//!   compiled components ([`plugin::cache`]), bindings, host imports,
//!   sandbox, and the plugin policy types ([`plugin::policy`]).
//! - [`crm`]: CRM sources behind the `crm` import (embedded, HTTP) and their cache.
//! - [`storage`]: every piece of state behind async ports; sled and Redis backends.
//! - [`scaffold`]: new plugin projects from the templates built in
//!   (`enrichd plugin new`); used by `cli` only.
//! - [`source_ip`]: per-route source-IP allowlists behind trusted proxies
//!   (a leaf beside `http`: it knows requests, not webhooks).
//! - [`metrics`]: the Prometheus registry of one running enrichd (a leaf:
//!   instrumentation points record through it, `admin` renders it).
//! - [`singleflight`]: one caller works per key, concurrent callers wait for its result.
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
pub mod metrics;
pub mod plugin;
pub mod scaffold;
pub mod singleflight;
pub mod source_ip;
pub mod storage;
pub mod text;
