//! Parsing of Emailgistics delivery payloads.
//!
//! Parsing is two-step so that forward compatibility holds: the `event` is
//! read first, and only a known event is parsed in full. Unknown fields are
//! ignored everywhere (serde's default), as the payload documentation asks.
//!
//! Fields the documentation lists as always present are required, except
//! those no plugin decision hinges on (`internetMessageId`, `received`,
//! `timestamp`, `hasAttachments`, `to`, `cc`): a delivery missing one of
//! those still deserves enrichment rather than a terminal 400.
//!
//! Fields that become keys, log fields or parts of the stored record are
//! length-capped ([`check_lengths`]): a sender must not make a sled key or
//! every log line as large as the body. An over-long field is a 400 naming
//! the field and its limit, before any plugin runs or anything is stored.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The one event Emailgistics sends today.
pub const EVENT_RECEIVED: &str = "received";

/// Longest delivery `id` and `conversationId`, bytes. Emailgistics ids are
/// 24 hex digits and conversation ids 9 characters; the id is part of two
/// sled keys (the stored answer and the delivery log) and of every log line
/// about the delivery, so 256 (ten times any real id) is plenty.
pub const MAX_ID_BYTES: usize = 256;
// Longest email address (`mailbox` and every `address`).
pub use crate::text::MAX_ADDRESS_BYTES;
// Longest `subject` (shared with EngageLab's callbacks).
pub use crate::text::MAX_SUBJECT_BYTES;
/// Longest `internetMessageId`, bytes: one RFC 5322 line (998 characters).
pub const MAX_MESSAGE_ID_BYTES: usize = 998;
/// Longest `event` name, bytes: names are short words (`received`); an
/// unknown one is logged.
pub const MAX_EVENT_NAME_BYTES: usize = 64;

use crate::text::{check_len, FieldTooLong};

/// Why a body is not an acceptable delivery (answered with 400).
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or JSON of the wrong shape or types.
    #[error("invalid payload: {0}")]
    Invalid(#[from] serde_json::Error),
    /// The body is not UTF-8 text.
    #[error("invalid payload: body is not UTF-8")]
    NotUtf8,
    /// A keyed or recorded field is over its length limit.
    #[error("invalid payload: {0}")]
    TooLong(#[from] FieldTooLong),
}

/// What a body turned out to be.
#[derive(Debug)]
pub enum Parsed {
    /// A `received` delivery, parsed in full.
    Received(Box<Delivery>),
    /// An event this host does not know; it is acknowledged and ignored.
    UnknownEvent(String),
}

/// An email address in the payload's `{ "emailAddress": { name, address } }` shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Address {
    /// Display name (may be missing; then empty).
    #[serde(default)]
    pub name: String,
    /// The address.
    pub address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressWrapper {
    email_address: Address,
}

fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    AddressWrapper::deserialize(d).map(|w| w.email_address)
}

fn addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Address>, D::Error> {
    // `null` is read as an empty list: it carries the same meaning.
    let list = Option::<Vec<AddressWrapper>>::deserialize(d)?;
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.email_address)
        .collect())
}

/// A `received` delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Unique message id; with the route, the idempotency key.
    pub id: String,
    /// The event (`received`).
    pub event: String,
    /// Message-ID header.
    #[serde(default)]
    pub internet_message_id: String,
    /// Received time, as sent.
    #[serde(default)]
    pub received: String,
    /// The shared mailbox.
    pub mailbox: String,
    /// Envelope sender.
    #[serde(deserialize_with = "address")]
    pub sender: Address,
    /// Header From.
    #[serde(deserialize_with = "address")]
    pub from: Address,
    /// Header To.
    #[serde(default, deserialize_with = "addresses")]
    pub to: Vec<Address>,
    /// Header Cc.
    #[serde(default, deserialize_with = "addresses")]
    pub cc: Vec<Address>,
    /// Subject.
    pub subject: String,
    /// Whether there are attachments.
    #[serde(default)]
    pub has_attachments: bool,
    /// Event time, as sent.
    #[serde(default)]
    pub timestamp: String,
    /// Emailgistics conversation id.
    pub conversation_id: String,
    /// Plain-text body, when included.
    #[serde(default)]
    pub body_text: Option<String>,
    /// Conversation custom fields, when included (sorted by key).
    #[serde(default)]
    pub custom_fields: Option<BTreeMap<String, String>>,
    /// The body as received, for plugins that read fields added later.
    #[serde(skip)]
    pub raw_json: String,
}

#[derive(Deserialize)]
struct EventOnly {
    event: String,
}

/// Parse a request body.
pub fn parse(body: &[u8]) -> Result<Parsed, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|_| PayloadError::NotUtf8)?;
    let EventOnly { event } = serde_json::from_str(text)?;
    check_len("event", &event, MAX_EVENT_NAME_BYTES)?;
    if event != EVENT_RECEIVED {
        return Ok(Parsed::UnknownEvent(event));
    }
    let mut delivery: Delivery = serde_json::from_str(text)?;
    check_lengths(&delivery)?;
    delivery.raw_json = text.to_owned();
    Ok(Parsed::Received(Box::new(delivery)))
}

/// Check every length-capped field of a delivery (see the module docs).
pub fn check_lengths(d: &Delivery) -> Result<(), FieldTooLong> {
    check_len("id", &d.id, MAX_ID_BYTES)?;
    check_len("conversationId", &d.conversation_id, MAX_ID_BYTES)?;
    check_len("mailbox", &d.mailbox, MAX_ADDRESS_BYTES)?;
    check_len("subject", &d.subject, MAX_SUBJECT_BYTES)?;
    check_len(
        "internetMessageId",
        &d.internet_message_id,
        MAX_MESSAGE_ID_BYTES,
    )?;
    check_len(
        "sender.emailAddress.address",
        &d.sender.address,
        MAX_ADDRESS_BYTES,
    )?;
    check_len(
        "from.emailAddress.address",
        &d.from.address,
        MAX_ADDRESS_BYTES,
    )?;
    for (list, name) in [(&d.to, "to"), (&d.cc, "cc")] {
        for (i, a) in list.iter().enumerate() {
            if a.address.len() > MAX_ADDRESS_BYTES {
                check_len(
                    &format!("{name}[{i}].emailAddress.address"),
                    &a.address,
                    MAX_ADDRESS_BYTES,
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../examples/seed-payload.json");

    fn received(body: &str) -> Delivery {
        match parse(body.as_bytes()).unwrap() {
            Parsed::Received(d) => *d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn seed_payload_parses_in_full() {
        let d = received(SEED);
        assert_eq!(d.id, "65e0aaef382d2e93ed1ef9bc");
        assert_eq!(d.mailbox, "info@pinnilly.com");
        assert_eq!(d.from.address, "rstorrie@pinnilly.com");
        assert_eq!(d.sender.name, "Ren Storrie");
        assert_eq!(d.to.len(), 1);
        assert!(d.cc.is_empty());
        assert_eq!(d.conversation_id, "2L8WYB89Z");
        assert!(!d.has_attachments);
        assert_eq!(
            d.custom_fields
                .unwrap()
                .get("claimNumber")
                .map(String::as_str),
            Some("CLM-556677")
        );
        assert!(d.body_text.unwrap().starts_with("I'm reaching out"));
        assert_eq!(d.raw_json, SEED);
    }

    #[test]
    fn unknown_fields_and_events_are_tolerated() {
        let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
        v["futureField"] = serde_json::json!({"nested": [1, 2]});
        v["sender"]["emailAddress"]["extra"] = serde_json::json!(true);
        assert_eq!(received(&v.to_string()).id, "65e0aaef382d2e93ed1ef9bc");

        let other = r#"{"event": "conversationClosed", "whatever": 1}"#;
        assert!(matches!(
            parse(other.as_bytes()).unwrap(),
            Parsed::UnknownEvent(e) if e == "conversationClosed"
        ));
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
        let obj = v.as_object_mut().unwrap();
        for key in ["bodyText", "customFields", "to", "cc", "internetMessageId"] {
            obj.remove(key);
        }
        let d = received(&v.to_string());
        assert!(d.body_text.is_none() && d.custom_fields.is_none());
        assert!(d.to.is_empty() && d.cc.is_empty());
    }

    #[test]
    fn malformed_json_and_wrong_types_are_errors() {
        assert!(parse(b"{not json").is_err());
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(b"{}").is_err(), "event is required");
        assert!(parse(&[0xff, 0xfe]).is_err());
        let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
        v["hasAttachments"] = serde_json::json!("yes");
        let err = parse(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");
        let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
        v.as_object_mut().unwrap().remove("mailbox");
        let err = parse(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("mailbox"), "{err}");
    }

    #[test]
    fn keyed_fields_at_their_limit_are_accepted_and_over_it_refused() {
        let cases: [(&str, &str, usize); 9] = [
            ("/id", "id", MAX_ID_BYTES),
            ("/conversationId", "conversationId", MAX_ID_BYTES),
            ("/mailbox", "mailbox", MAX_ADDRESS_BYTES),
            ("/subject", "subject", MAX_SUBJECT_BYTES),
            (
                "/internetMessageId",
                "internetMessageId",
                MAX_MESSAGE_ID_BYTES,
            ),
            (
                "/sender/emailAddress/address",
                "sender.emailAddress.address",
                MAX_ADDRESS_BYTES,
            ),
            (
                "/from/emailAddress/address",
                "from.emailAddress.address",
                MAX_ADDRESS_BYTES,
            ),
            (
                "/to/0/emailAddress/address",
                "to[0].emailAddress.address",
                MAX_ADDRESS_BYTES,
            ),
            ("/event", "event", MAX_EVENT_NAME_BYTES),
        ];
        for (pointer, field, limit) in cases {
            let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
            // "received" padded keeps the event known only at its own length.
            if field == "event" {
                *v.pointer_mut(pointer).unwrap() = "e".repeat(limit).into();
                assert!(matches!(
                    parse(v.to_string().as_bytes()).unwrap(),
                    Parsed::UnknownEvent(_)
                ));
            } else {
                *v.pointer_mut(pointer).unwrap() = "a".repeat(limit).into();
                let d = received(&v.to_string());
                assert_eq!(d.raw_json.len(), v.to_string().len());
            }
            *v.pointer_mut(pointer).unwrap() = "a".repeat(limit + 1).into();
            let err = parse(v.to_string().as_bytes()).unwrap_err();
            assert!(
                matches!(&err, PayloadError::TooLong(f) if f.field == field && f.limit == limit && f.len == limit + 1),
                "{field}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("`{field}`")) && text.contains(&limit.to_string()),
                "{text}"
            );
        }
        // The second cc is named by its index.
        let mut v: serde_json::Value = serde_json::from_str(SEED).unwrap();
        let long =
            serde_json::json!({"emailAddress": {"address": "c".repeat(MAX_ADDRESS_BYTES + 1)}});
        v["cc"] = serde_json::json!([{"emailAddress": {"address": "ok@x.example"}}, long]);
        let err = parse(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("`cc[1].emailAddress.address`"), "{err}");
    }
}
