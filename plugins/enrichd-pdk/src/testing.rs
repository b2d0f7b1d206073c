//! Unit-testing plugin logic on the host target, without wasm:
//! [`FakeHost`] is an in-memory [`Host`], and [`delivery`] / [`event`] are
//! sample inputs (the Emailgistics seed payload, an EngageLab open).

use crate::{CrmAnswer, EmailAddress, EngagelabEvent, EventKind, HostFailure, Level, Provenance};
use crate::{Delivery, Host};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// An in-memory [`Host`]: config map, CRM records by email and by domain
/// (with provenance), kv namespaces, captured log lines and the list of
/// calls made, and failures injected per import.
///
/// ```
/// use enrichd_pdk::testing::{answer, FakeHost};
/// use enrichd_pdk::{Host, HostFailure, Provenance};
///
/// let host = FakeHost::new()
///     .config("vip-tag", "VIP")
///     .crm_email("ann@x.com", answer([("tier", "gold")], Provenance::Fresh))
///     .fail("kv.set", HostFailure::OverLimit("namespace full".into()));
/// assert_eq!(host.crm_lookup_email("ANN@x.com").unwrap().unwrap().field("tier"), Some("gold"));
/// assert!(host.kv_set("k", "v").is_err());
/// assert_eq!(host.calls(), ["crm.lookup-email ANN@x.com", "kv.set k"]);
/// ```
#[derive(Debug, Default)]
pub struct FakeHost {
    config: BTreeMap<String, String>,
    crm_emails: BTreeMap<String, CrmAnswer>,
    crm_domains: BTreeMap<String, CrmAnswer>,
    failures: BTreeMap<String, HostFailure>,
    kv: RefCell<BTreeMap<(String, String), String>>,
    logs: RefCell<Vec<(Level, String)>>,
    calls: RefCell<Vec<String>>,
}

/// The namespace [`FakeHost`] treats as the plugin's own.
pub const OWN_NAMESPACE: &str = "self";

impl FakeHost {
    /// A host with nothing configured: every lookup answers "none".
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets config `key` to `value`.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_string(), value.to_string());
        self
    }

    /// The CRM answer for `email` (matched case-insensitively).
    pub fn crm_email(mut self, email: &str, answer: CrmAnswer) -> Self {
        self.crm_emails.insert(email.to_lowercase(), answer);
        self
    }

    /// The CRM record of `domain`: `lookup-domain` answers it, and
    /// `lookup-email` of an unknown address there answers it with
    /// provenance `Domain`, as the host does.
    pub fn crm_domain(mut self, domain: &str, answer: CrmAnswer) -> Self {
        self.crm_domains.insert(domain.to_lowercase(), answer);
        self
    }

    /// Stores `key` = `value` in the plugin's own kv namespace.
    pub fn kv(self, key: &str, value: &str) -> Self {
        self.kv_in(OWN_NAMESPACE, key, value)
    }

    /// Stores `key` = `value` in another plugin's namespace (`kv_get_from`).
    pub fn kv_in(self, namespace: &str, key: &str, value: &str) -> Self {
        self.kv
            .borrow_mut()
            .insert(slot(namespace, key), value.to_string());
        self
    }

    /// Makes an import fail with `failure`: `import` is an interface
    /// (`"kv"`) or one function (`"kv.get-from"`, WIT names); a function's
    /// entry wins over its interface's.
    pub fn fail(mut self, import: &str, failure: HostFailure) -> Self {
        self.failures.insert(import.to_string(), failure);
        self
    }

    /// The log lines written, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    /// The calls made, in order, as `interface.function argument…`
    /// (`crm.lookup-email a@x.com`, `kv.get-from tracker a@x.com`); log
    /// calls are in [`FakeHost::logs`] instead.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// The value of `key` in the plugin's own namespace now.
    pub fn kv_value(&self, key: &str) -> Option<String> {
        self.kv_read(OWN_NAMESPACE, key)
    }

    /// Records the call and answers its injected failure, if any.
    fn call(&self, function: &str, args: &[&str]) -> Result<(), HostFailure> {
        if !function.starts_with("log.") {
            let mut line = function.to_string();
            for arg in args {
                line.push(' ');
                line.push_str(arg);
            }
            self.calls.borrow_mut().push(line);
        }
        let interface = function.split('.').next().unwrap_or(function);
        match self
            .failures
            .get(function)
            .or_else(|| self.failures.get(interface))
        {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    fn kv_read(&self, namespace: &str, key: &str) -> Option<String> {
        self.kv.borrow().get(&slot(namespace, key)).cloned()
    }
}

/// The map key of `key` in `namespace`.
fn slot(namespace: &str, key: &str) -> (String, String) {
    (namespace.to_string(), key.to_string())
}

impl Host for FakeHost {
    fn log(&self, level: Level, message: &str) -> Result<(), HostFailure> {
        self.call("log.log", &[])?;
        self.logs.borrow_mut().push((level, message.to_string()));
        Ok(())
    }
    fn config_get(&self, key: &str) -> Result<Option<String>, HostFailure> {
        self.call("config.get", &[key])?;
        Ok(self.config.get(key).cloned())
    }
    fn config_get_all(&self) -> Result<Vec<(String, String)>, HostFailure> {
        self.call("config.get-all", &[])?;
        Ok(self.config.clone().into_iter().collect())
    }
    fn crm_lookup_email(&self, email: &str) -> Result<Option<CrmAnswer>, HostFailure> {
        self.call("crm.lookup-email", &[email])?;
        let email = email.trim().to_lowercase();
        if let Some(found) = self.crm_emails.get(&email) {
            return Ok(Some(found.clone()));
        }
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        Ok(self.crm_domains.get(domain).map(|a| CrmAnswer {
            provenance: Provenance::Domain,
            ..a.clone()
        }))
    }
    fn crm_lookup_domain(&self, domain: &str) -> Result<Option<CrmAnswer>, HostFailure> {
        self.call("crm.lookup-domain", &[domain])?;
        Ok(self.crm_domains.get(&domain.to_lowercase()).cloned())
    }
    fn kv_get(&self, key: &str) -> Result<Option<String>, HostFailure> {
        self.call("kv.get", &[key])?;
        Ok(self.kv_read(OWN_NAMESPACE, key))
    }
    fn kv_set(&self, key: &str, value: &str) -> Result<(), HostFailure> {
        self.call("kv.set", &[key])?;
        self.kv
            .borrow_mut()
            .insert(slot(OWN_NAMESPACE, key), value.to_string());
        Ok(())
    }
    fn kv_delete(&self, key: &str) -> Result<(), HostFailure> {
        self.call("kv.delete", &[key])?;
        self.kv.borrow_mut().remove(&slot(OWN_NAMESPACE, key));
        Ok(())
    }
    fn kv_get_from(&self, namespace: &str, key: &str) -> Result<Option<String>, HostFailure> {
        self.call("kv.get-from", &[namespace, key])?;
        Ok(self.kv_read(namespace, key))
    }
}

/// A CRM answer with `fields` and `provenance`, fresh (`age_ms` 0) from
/// source `fake`; change the rest with struct update syntax.
pub fn answer<K: Into<String>, V: Into<String>>(
    fields: impl IntoIterator<Item = (K, V)>,
    provenance: Provenance,
) -> CrmAnswer {
    CrmAnswer {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        provenance,
        age_ms: 0,
        source: "fake".to_string(),
    }
}

/// An address with a display name.
pub fn address(name: &str, address: &str) -> EmailAddress {
    EmailAddress {
        name: name.to_string(),
        address: address.to_string(),
    }
}

/// The Emailgistics documentation's seed delivery (`examples/seed-payload.json`),
/// as a plugin receives it; change fields with struct update syntax.
pub fn delivery() -> Delivery {
    let ren = address("Ren Storrie", "rstorrie@pinnilly.com");
    Delivery {
        id: "65e0aaef382d2e93ed1ef9bc".to_string(),
        event: "received".to_string(),
        internet_message_id: "<YT2189.CANRD01.PROD.OLOOK.COM>".to_string(),
        received: "2026-02-28T16:03:58Z".to_string(),
        mailbox: "info@pinnilly.com".to_string(),
        sender: ren.clone(),
        from: ren,
        to: vec![address("Pinnilly Insurance", "info@pinnilly.com")],
        cc: Vec::new(),
        subject: "Coverage".to_string(),
        has_attachments: false,
        timestamp: "2026-02-28T16:03:59Z".to_string(),
        conversation_id: "2L8WYB89Z".to_string(),
        body_text: Some(
            "I'm reaching out to confirm the details of my current coverage...".to_string(),
        ),
        custom_fields: Some(vec![
            ("claimNumber".to_string(), "CLM-556677".to_string()),
            ("policyNumber".to_string(), "POL-889900".to_string()),
        ]),
        raw_json: "{}".to_string(),
    }
}

/// The seed [`delivery`], from `from` and sent by `sender` (addresses
/// without display names): send-on-behalf when they differ.
pub fn delivery_from(from: &str, sender: &str) -> Delivery {
    Delivery {
        from: address("", from),
        sender: address("", sender),
        ..delivery()
    }
}

/// An EngageLab event of `kind` about `address`; change fields with struct
/// update syntax.
pub fn event(kind: EventKind, kind_name: &str, address: &str, itime: i64) -> EngagelabEvent {
    EngagelabEvent {
        kind,
        kind_name: kind_name.to_string(),
        message_id: "msg-1".to_string(),
        address: address.to_string(),
        from: "support@pinnilly.com".to_string(),
        subject: "Your claim".to_string(),
        itime,
        email_id: None,
        error_code: None,
        sub_stat: None,
        sub_stat_desc: None,
        message: None,
        url: None,
        custom_args: "{}".to_string(),
        raw_json: "{}".to_string(),
    }
}
