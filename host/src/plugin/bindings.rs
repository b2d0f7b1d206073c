//! The Rust bindings of `wit/plugin.wit`: the project's one `bindgen!`.
//!
//! Imports are `async` so host calls (CRM lookups) can await I/O while the
//! delivery's deadline still applies, and `trappable` so each host function
//! returns `wasmtime::Result<Result<T, HostError>>`: the outer error traps the
//! guest (a host bug), the inner one is an answer the guest handles.

wasmtime::component::bindgen!({
    world: "delivery-plugin",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use enrichd::plugin::types;
