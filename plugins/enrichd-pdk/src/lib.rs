//! # enrichd-pdk
//!
//! The plugin development kit for enrichd plugins written in Rust: WebAssembly
//! components built for `wasm32-wasip2` against enrichd's WIT (`wit/`,
//! package `enrichd:plugin@0.2.0`).
//!
//! - **Bindings** are made here: a plugin implements [`Handler`] (world
//!   `delivery-plugin`), [`Events`] (`event-plugin`) or both, and exports
//!   itself with [`export_delivery!`], [`export_events!`] or
//!   [`export_plugin!`]; it never runs `wit_bindgen::generate!`.
//! - **The host is a trait**, [`Host`]: the plugin's logic gets `&impl Host`,
//!   which is the real imports ([`Imports`]) in wasm and
//!   [`testing::FakeHost`] in a plain `cargo test` on the host target.
//! - **Typed builders** for the five actions ([`Action::tag`],
//!   [`Action::set_custom_fields`], [`Action::assign`],
//!   [`Action::send_template`] / [`Action::send_inline`],
//!   [`Action::forward`]) make an action the host would drop hard to write.
//! - **Helpers**: [`Config`] for typed settings, [`CrmAnswer::field`],
//!   [`Delivery::sender_addresses`], and the crate's own errors
//!   [`HostFailure`] and [`Failure`].
//!
//! ## A complete plugin
//!
//! ```
//! use enrichd_pdk::{Action, Config, Delivery, Failure, Handler, Host, PluginOutput};
//!
//! /// Tags customers whose CRM tier is VIP.
//! pub struct TagVip;
//!
//! impl Handler for TagVip {
//!     fn handle(host: &impl Host, delivery: Delivery) -> Result<PluginOutput, Failure> {
//!         let tag: String = Config::new(host, "tag-vip").get_or("tag", "VIP".into())?;
//!         let email = &delivery.from.address;
//!         let answer = host
//!             .crm_lookup_email(email)
//!             .map_err(|e| Failure::Dependency(format!("crm lookup of {email}: {e}")))?;
//!         match answer {
//!             Some(a) if a.field("tier") == Some("vip") => Ok(PluginOutput::new(
//!                 vec![Action::tag([tag]).named("Tag VIP")],
//!                 format!("{email} is VIP"),
//!             )),
//!             _ => Ok(PluginOutput::new(Vec::new(), format!("{email} is not VIP"))),
//!         }
//!     }
//! }
//!
//! enrichd_pdk::export_delivery!(TagVip);
//!
//! // The same logic, unit-tested on the host target:
//! use enrichd_pdk::testing::{answer, delivery, FakeHost};
//! use enrichd_pdk::Provenance;
//!
//! let host = FakeHost::new()
//!     .crm_email("rstorrie@pinnilly.com", answer([("tier", "vip")], Provenance::Fresh));
//! let out = TagVip::handle(&host, delivery()).unwrap();
//! assert_eq!(out.actions, vec![Action::tag(["VIP"]).named("Tag VIP")]);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the component
//! is `target/wasm32-wasip2/release/<name>.wasm`. The crate's `Cargo.toml`
//! is self-contained and finds the WIT in `wit/` next to it, so it can be
//! vendored as is (`enrichd plugin new --lang rust` does).

// The generated export macros name this crate by path, also from inside it.
extern crate self as enrichd_pdk;

mod action;
pub mod bindings;
mod error;
mod host;
pub mod testing;

pub use action::{Assign, Forward, IntoItem, NonEmpty, Pool, SendMessage};
pub use bindings::delivery::enrichd::plugin::crm::{CrmAnswer, Provenance};
pub use bindings::delivery::enrichd::plugin::log::Level;
pub use bindings::delivery::enrichd::plugin::types::{
    Action, ActionValue, BodyType, Delivery, EmailAddress, PluginOutput,
};
pub use bindings::event::exports::enrichd::plugin::events::{EngagelabEvent, EventKind};
pub use error::{Failure, HostFailure};
pub use host::{split_list, Config, Host, Imports};

/// What the generated code and the export macros need at their call site.
#[doc(hidden)]
pub mod __rt {
    pub use wit_bindgen;
}

/// A delivery plugin: handles one Emailgistics delivery (`handler` export).
pub trait Handler {
    /// The actions to apply, in order, or why the plugin cannot help.
    fn handle(host: &impl Host, delivery: Delivery) -> Result<PluginOutput, Failure>;
}

/// An event plugin: handles one EngageLab callback (`events` export).
/// Events arrive at least once: handling the same one twice must be safe.
pub trait Events {
    /// Records or reacts to the event.
    fn handle_event(host: &impl Host, event: EngagelabEvent) -> Result<(), Failure>;
}

impl<T: Handler> bindings::delivery::exports::enrichd::plugin::handler::Guest for T {
    fn handle(
        delivery: Delivery,
    ) -> Result<PluginOutput, bindings::delivery::enrichd::plugin::types::PluginError> {
        <T as Handler>::handle(&Imports, delivery).map_err(Into::into)
    }
}

impl<T: Events> bindings::event::exports::enrichd::plugin::events::Guest for T {
    fn handle_event(
        event: EngagelabEvent,
    ) -> Result<(), bindings::delivery::enrichd::plugin::types::PluginError> {
        <T as Events>::handle_event(&Imports, event).map_err(Into::into)
    }
}

/// Exports a [`Handler`] as the component's `handler` (world
/// `delivery-plugin`): `enrichd_pdk::export_delivery!(MyPlugin);`.
#[macro_export]
macro_rules! export_delivery {
    ($ty:ident) => {
        $crate::__export_delivery_plugin_impl!($ty with_types_in $crate::bindings::delivery);
    };
}

/// Exports an [`Events`] as the component's `events` (world
/// `event-plugin`): `enrichd_pdk::export_events!(MyPlugin);`.
#[macro_export]
macro_rules! export_events {
    ($ty:ident) => {
        $crate::__export_event_plugin_impl!($ty with_types_in $crate::bindings::event);
    };
}

/// Exports a type that is both a [`Handler`] and [`Events`] (world
/// `enrichd-plugin`): `enrichd_pdk::export_plugin!(MyPlugin);`.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        $crate::export_delivery!($ty);
        $crate::export_events!($ty);
    };
}

impl Delivery {
    /// The addresses to look the sender up by, in order, trimmed: `from`,
    /// then `sender` when it differs (ASCII case-insensitively), skipping
    /// empty ones.
    pub fn sender_addresses(&self) -> Vec<String> {
        let from = self.from.address.trim();
        let sender = self.sender.address.trim();
        let mut out = Vec::new();
        if !from.is_empty() {
            out.push(from.to_string());
        }
        if !sender.is_empty() && !sender.eq_ignore_ascii_case(from) {
            out.push(sender.to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::delivery_from;

    #[test]
    fn sender_addresses() {
        let with = |from: &str, sender: &str| delivery_from(from, sender).sender_addresses();
        assert_eq!(with("a@x.com", "a@x.com"), vec!["a@x.com"]);
        assert_eq!(with(" a@x.com", "A@X.com "), vec!["a@x.com"]);
        assert_eq!(with("a@x.com", "b@x.com"), vec!["a@x.com", "b@x.com"]);
        assert_eq!(with("", "b@x.com"), vec!["b@x.com"]);
        assert!(with(" ", "").is_empty());
    }
}
