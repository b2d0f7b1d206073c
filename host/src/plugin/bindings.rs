//! The Rust bindings of `wit/plugin.wit`: the project's one `bindgen!`.
//!
//! Imports are `async` so host calls (CRM lookups) can await I/O while the
//! delivery's deadline still applies, and `trappable` so each host function
//! returns `wasmtime::Result<Result<T, HostError>>`: the outer error traps the
//! guest (a host bug), the inner one is an answer the guest handles.

// Generated code: its documentation is `wit/plugin.wit`, now public as
// `plugin::wit` for the Emailgistics conversions.
#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        // The world with every import and both exports: a plugin's component
        // exports `handler`, `events` or both, and each export is looked up on
        // its own (see `plugin::engine`), so one binding serves every plugin.
        world: "enrichd-plugin",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use generated::*;

pub use generated::enrichd::plugin::types;
pub use generated::exports::enrichd::plugin::{events, handler};
