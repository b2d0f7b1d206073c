//! # probe-capabilities (test plugin)
//!
//! `handle` calls each host import once:
//!
//! - `config::get("probe")`,
//! - `crm::lookup-email("rstorrie@pinnilly.com")`,
//! - `log::log(info, "probe")`,
//!
//! and returns one `set-custom-fields` action named "capabilities" with keys
//! `config`, `crm` and `log`, each `ok` (the call returned `Ok`, whatever its
//! content), `denied`, `unavailable` or `invalid` (the `host-error` case).
//! The integration tests use it to check the host's per-plugin capability
//! grants. The output message is "probed".
//!
//! Config keys: `probe` is read but its value is not used.

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../../wit",
});

use enrichd::plugin::log::Level;
use enrichd::plugin::types::{Action, ActionValue, Delivery, HostError, PluginError, PluginOutput};
use enrichd::plugin::{config, crm, log};
use exports::enrichd::plugin::handler::Guest;

/// `ok`, or the name of the `host-error` case.
pub fn outcome<T>(result: &Result<T, HostError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(HostError::Denied(_)) => "denied",
        Err(HostError::Unavailable(_)) => "unavailable",
        Err(HostError::Invalid(_)) => "invalid",
        Err(HostError::OverLimit(_)) => "over-limit",
    }
}

/// The plugin; exported as the `handler` interface.
struct ProbeCapabilities;

impl Guest for ProbeCapabilities {
    fn handle(_delivery: Delivery) -> Result<PluginOutput, PluginError> {
        let config = outcome(&config::get("probe"));
        let crm = outcome(&crm::lookup_email("rstorrie@pinnilly.com"));
        let log = outcome(&log::log(Level::Info, "probe"));
        Ok(PluginOutput {
            actions: vec![Action {
                name: Some("capabilities".to_string()),
                value: ActionValue::SetCustomFields(vec![
                    ("config".to_string(), config.to_string()),
                    ("crm".to_string(), crm.to_string()),
                    ("log".to_string(), log.to_string()),
                ]),
            }],
            message: Some("probed".to_string()),
        })
    }
}

export!(ProbeCapabilities);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(outcome::<()>(&Ok(())), "ok");
        assert_eq!(outcome::<()>(&Err(HostError::Denied("x".into()))), "denied");
        assert_eq!(
            outcome::<()>(&Err(HostError::Unavailable("x".into()))),
            "unavailable"
        );
        assert_eq!(
            outcome::<()>(&Err(HostError::Invalid("x".into()))),
            "invalid"
        );
    }
}
