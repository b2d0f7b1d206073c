//! # engagement-enrich
//!
//! An enrichd delivery plugin (world `delivery-plugin`) that flags the sender
//! of an incoming Emailgistics message with what EngageLab reported about
//! mail sent to them, as recorded by the `engagement-tracker` event plugin.
//!
//! ## Flow
//!
//! 1. `kv::get-from(<tracker>, from.address)`, then `sender.address` when it
//!    differs (both lower-cased, as the tracker's keys are). The first state
//!    found is used.
//! 2. State found (message `engagement recorded for <email>`):
//!    - one `tag` action named "Engagement flags" with, in this order:
//!      `Bounced` if `hardBounces > 0`, `Soft-bounced` if
//!      `softBounces >= soft-bounce-threshold`, `Unsubscribed` if
//!      `unsubscribed`, `Spam-reported` if `spamReports > 0` (omitted when
//!      none applies);
//!    - one `set-custom-fields` action named "Engagement context" with
//!      `lastEngagement` = the latest of `lastOpen`/`lastClick`/`lastReply`
//!      as RFC 3339 UTC seconds (`2026-02-17T07:52:50Z`), when any is set.
//! 3. No state: no actions, message `no engagement recorded for <email>`
//!    (`… for <from> or <sender>` when both were read).
//!
//! A delivery with neither a from nor a sender address is an
//! `invalid-delivery` error.
//!
//! ## Capabilities
//!
//! - `kv` with read access to the tracker's namespace (required): a denied
//!   `get-from` is `plugin-error::dependency("engagement-enrich: reading the
//!   tracker's namespace was denied: <reason>")`; `unavailable`/`invalid` are
//!   `dependency("engagement-enrich: reading the tracker's namespace failed:
//!   <kind>: <reason>")`; a state that is not JSON is a `dependency` error too.
//! - `config` (optional): when denied, every setting takes its default; other
//!   config failures are `dependency` errors.
//! - `log` (optional): one debug line; `crm` is not used.
//!
//! ## Config keys (`[plugin.config]`), all optional, none may be blank
//!
//! | key                     | meaning                                   | default              |
//! |-------------------------|-------------------------------------------|----------------------|
//! | `tracker`               | the tracker plugin's kv namespace         | `engagement-tracker` |
//! | `soft-bounce-threshold` | soft bounces (≥ 1) that earn the tag      | `3`                  |
//! | `bounced-tag`           | tag for a hard bounce                     | `Bounced`            |
//! | `soft-bounced-tag`      | tag for repeated soft bounces             | `Soft-bounced`       |
//! | `unsubscribed-tag`      | tag for an unsubscribed address           | `Unsubscribed`       |
//! | `spam-tag`              | tag for a spam report                     | `Spam-reported`      |
//!
//! The decisions live in [`logic`], which does not depend on the generated
//! bindings and is unit-tested on the host target.

pub mod logic;

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../wit",
});

use enrichd::plugin::log::Level;
use enrichd::plugin::types::{
    Action, ActionValue, Delivery, HostError, PluginError, PluginOutput, TagAction,
};
use enrichd::plugin::{config, kv, log};
use enrichd_plugin_support::HostFailure;
use exports::enrichd::plugin::handler::Guest;
use logic::Planned;

/// The plugin; exported as the `handler` interface.
struct EngagementEnrich;

impl Guest for EngagementEnrich {
    fn handle(delivery: Delivery) -> Result<PluginOutput, PluginError> {
        let settings = logic::read_settings(|key| config::get(key).map_err(HostFailure::from))
            .map_err(PluginError::from)?;
        let plan = logic::enrich(
            &delivery.from.address,
            &delivery.sender.address,
            &settings,
            |ns, key| kv::get_from(ns, key).map_err(HostFailure::from),
        )
        .map_err(PluginError::from)?;
        // Logging is best effort: a denied `log` capability is fine.
        let _ = log::log(Level::Debug, &plan.message);
        let actions = plan
            .actions
            .into_iter()
            .map(|planned| match planned {
                Planned::Flags(tags) => Action {
                    name: Some(logic::TAG_ACTION_NAME.to_string()),
                    value: ActionValue::Tag(TagAction { tags }),
                },
                Planned::Context(fields) => Action {
                    name: Some(logic::FIELDS_ACTION_NAME.to_string()),
                    value: ActionValue::SetCustomFields(fields),
                },
            })
            .collect();
        Ok(PluginOutput {
            actions,
            message: Some(plan.message),
        })
    }
}

enrichd_plugin_support::host_failure_from!(HostError);
enrichd_plugin_support::plugin_error_from!(PluginError);

export!(EngagementEnrich);
