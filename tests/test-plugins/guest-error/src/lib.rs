//! # guest-error (test plugin)
//!
//! `handle` always returns
//! `Err(plugin-error::internal("guest-error plugin: deliberate failure"))`:
//! the integration tests use it to check how the host records a plugin that
//! fails cleanly (no trap).
//!
//! Capabilities: none. Config keys: none.

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../../wit",
});

use enrichd::plugin::types::{Delivery, PluginError, PluginOutput};
use exports::enrichd::plugin::handler::Guest;

/// The error message this plugin always returns.
pub const MESSAGE: &str = "guest-error plugin: deliberate failure";

/// The plugin; exported as the `handler` interface.
struct GuestError;

impl Guest for GuestError {
    fn handle(_delivery: Delivery) -> Result<PluginOutput, PluginError> {
        Err(PluginError::Internal(MESSAGE.to_string()))
    }
}

export!(GuestError);
