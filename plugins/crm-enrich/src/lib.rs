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
//! Built on `enrichd-pdk`: the flow lives in [`logic`], written against
//! the [`Host`] trait and unit-tested there with `FakeHost`.

pub mod logic;

use enrichd_pdk::{Delivery, Failure, Handler, Host, PluginOutput};

/// The plugin; exported as the `handler` interface.
pub struct CrmEnrich;

impl Handler for CrmEnrich {
    fn handle(host: &impl Host, delivery: Delivery) -> Result<PluginOutput, Failure> {
        let settings = logic::read_settings(host)?;
        logic::enrich(host, &delivery, &settings)
    }
}

enrichd_pdk::export_delivery!(CrmEnrich);
