//! The generated WIT bindings, made once here so that no plugin runs
//! `wit_bindgen::generate!` itself.
//!
//! Two generations share one set of types and imports:
//!
//! - [`delivery`]: world `delivery-plugin` — the types, the four imports
//!   (`log`, `config`, `crm`, `kv`) and the `handler` export;
//! - [`event`]: world `event-plugin` — only the `events` export; its types
//!   and imports are those of [`delivery`] (`with`).
//!
//! Both export macros are `pub` (`pub_export_macro`), so wit-bindgen puts
//! each world's export description into the macro's expansion: a plugin's
//! component exports exactly the interfaces whose macro it invoked
//! ([`crate::export_delivery!`], [`crate::export_events!`], or both through
//! [`crate::export_plugin!`], whose two world descriptions wit-component
//! unions into `enrichd-plugin`).

/// World `delivery-plugin`: types, imports, and the `handler` export.
pub mod delivery {
    wit_bindgen::generate!({
        world: "delivery-plugin",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "enrichd_pdk::bindings::delivery",
        runtime_path: "enrichd_pdk::__rt::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

/// World `event-plugin`: only the `events` export (types and imports are
/// [`delivery`]'s).
pub mod event {
    wit_bindgen::generate!({
        world: "event-plugin",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "enrichd_pdk::bindings::event",
        runtime_path: "enrichd_pdk::__rt::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
        with: {
            "enrichd:plugin/types@0.2.0": crate::bindings::delivery::enrichd::plugin::types,
            "enrichd:plugin/log@0.2.0": crate::bindings::delivery::enrichd::plugin::log,
            "enrichd:plugin/config@0.2.0": crate::bindings::delivery::enrichd::plugin::config,
            "enrichd:plugin/crm@0.2.0": crate::bindings::delivery::enrichd::plugin::crm,
            "enrichd:plugin/kv@0.2.0": crate::bindings::delivery::enrichd::plugin::kv,
        },
    });
}
