//! # crm-enrich
//!
//! An enrichd delivery plugin that follows the Emailgistics guide "Enrich a
//! conversation from a webhook": it looks the message's sender up in the CRM
//! and writes the customer's record onto the conversation as custom fields,
//! tagging VIP customers.
//!
//! ## Flow
//!
//! 1. `crm::lookup-email(from.address)`; if there is no record and
//!    `sender.address` differs (send-on-behalf), `crm::lookup-email(sender.address)`.
//! 2. Record found:
//!    - one `set-custom-fields` action named "Apply CRM context" with the
//!      configured record keys (default `claimNumber`, `policyNumber`,
//!      `region`) that the record has, in the configured order (omitted when
//!      the record has none of them);
//!    - then, when the record's `tier` is one of the VIP tiers (compared
//!      case-insensitively), one `tag` action named "Tag VIP customers" with
//!      the VIP tag.
//!
//!    Message: `enriched from CRM record for <email>`.
//! 3. The answer's provenance decides the rest:
//!    - `stale` (the CRM could not answer now; this is its last value): the
//!      same actions plus a `tag` "Tag stale CRM data" with the stale tag;
//!    - `domain` (no record for either address, only for its domain): one
//!      `set-custom-fields` with the domain fields (default `region`).
//! 4. No record: no actions; message `no CRM record for <email>` (or
//!    `no CRM record for <from> or <sender>` when both were tried).
//!
//! ## Capabilities
//!
//! - `crm` (required): denied or failing lookups make the plugin return
//!   `plugin-error::dependency("crm lookup of <email> failed: <kind>: <host's reason>")`.
//! - `config` (optional): when denied, every setting takes its default. Other
//!   config failures (`unavailable`, `invalid`) are `dependency` errors.
//! - `log` (optional): debug lines about the lookups; log errors (e.g.
//!   denied) are ignored.
//!
//! ## Config keys (`[plugin.config]`), all optional
//!
//! | key         | meaning                                         | default                            |
//! |-------------|-------------------------------------------------|------------------------------------|
//! | `vip-tiers` | comma-separated tiers that earn the VIP tag     | `vip,gold,platinum`                |
//! | `vip-tag`   | the tag applied to VIP customers (not empty)    | `VIP`                              |
//! | `fields`    | comma-separated record keys copied, in order    | `claimNumber,policyNumber,region`  |
//! | `stale-tag` | the tag marking stale CRM data (not empty)      | `CRM-stale`                        |
//! | `domain-fields` | record keys copied from a domain match      | `region`                           |
//!
//! List items are trimmed and empty items dropped; an empty `vip-tiers`
//! disables VIP tagging.
//!
//! A delivery with neither a from nor a sender address is an
//! `invalid-delivery` error.
//!
//! The decisions live in [`logic`], which does not depend on the generated
//! bindings and is unit-tested on the host target.

pub mod logic;

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../wit",
});

use enrichd::plugin::log::Level;
use enrichd::plugin::types::{Action, ActionValue, Delivery, HostError, PluginError, PluginOutput};
use enrichd::plugin::{config, crm, log};
use enrichd_plugin_support::HostFailure;
use exports::enrichd::plugin::handler::Guest;
use logic::Planned;

/// The plugin; exported as the `handler` interface.
struct CrmEnrich;

impl Guest for CrmEnrich {
    fn handle(delivery: Delivery) -> Result<PluginOutput, PluginError> {
        let settings = logic::read_settings(|key| config::get(key).map_err(HostFailure::from))
            .map_err(PluginError::from)?;
        let plan = logic::enrich(
            &delivery.from.address,
            &delivery.sender.address,
            &settings,
            |email| {
                crm::lookup_email(email)
                    .map(|found| found.map(answer))
                    .map_err(HostFailure::from)
            },
            |line| {
                // Logging is best effort: a denied `log` capability is fine.
                let _ = log::log(Level::Debug, line);
            },
        )
        .map_err(PluginError::from)?;
        let actions = plan
            .actions
            .into_iter()
            .map(|planned| match planned {
                Planned::SetCustomFields(fields) => Action {
                    name: Some(logic::FIELDS_ACTION_NAME.to_string()),
                    value: ActionValue::SetCustomFields(fields),
                },
                Planned::Tag(tags) => Action {
                    name: Some(logic::TAG_ACTION_NAME.to_string()),
                    value: ActionValue::Tag(enrichd::plugin::types::TagAction { tags }),
                },
                Planned::StaleTag(tags) => Action {
                    name: Some(logic::STALE_ACTION_NAME.to_string()),
                    value: ActionValue::Tag(enrichd::plugin::types::TagAction { tags }),
                },
                Planned::DomainFields(fields) => Action {
                    name: Some(logic::DOMAIN_ACTION_NAME.to_string()),
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

fn answer(a: crm::CrmAnswer) -> logic::Found {
    logic::Found {
        record: a.fields,
        provenance: match a.provenance {
            crm::Provenance::Fresh => logic::Provenance::Fresh,
            crm::Provenance::Stale => logic::Provenance::Stale { age_ms: a.age_ms },
            crm::Provenance::Domain => logic::Provenance::Domain,
        },
    }
}

enrichd_plugin_support::host_failure_from!(HostError);
enrichd_plugin_support::plugin_error_from!(PluginError);

export!(CrmEnrich);
