//! # trap (test plugin)
//!
//! `handle` panics with the message "trap plugin: deliberate panic". On
//! `wasm32-wasip2` a panic aborts, which the host sees as a trap: the
//! integration tests use it to check that a trapping plugin is contained
//! (its output skipped and the error recorded) without harming the host or
//! other plugins.
//!
//! Capabilities: none. Config keys: none.

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../../wit",
});

use enrichd::plugin::types::{Delivery, PluginError, PluginOutput};
use exports::enrichd::plugin::handler::Guest;

/// The plugin; exported as the `handler` interface.
struct Trap;

impl Guest for Trap {
    fn handle(_delivery: Delivery) -> Result<PluginOutput, PluginError> {
        panic!("trap plugin: deliberate panic");
    }
}

export!(Trap);
