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
//! Built on `enrichd-pdk`: the flow lives in [`logic`], written against
//! the [`Host`] trait and unit-tested there with `FakeHost`.

pub mod logic;

use enrichd_pdk::{Delivery, Failure, Handler, Host, PluginOutput};

/// The plugin; exported as the `handler` interface.
pub struct EngagementEnrich;

impl Handler for EngagementEnrich {
    fn handle(host: &impl Host, delivery: Delivery) -> Result<PluginOutput, Failure> {
        let settings = logic::read_settings(host)?;
        let out = logic::enrich(host, &delivery, &settings)?;
        host.debug(out.message.as_deref().unwrap_or_default());
        Ok(out)
    }
}

enrichd_pdk::export_delivery!(EngagementEnrich);
