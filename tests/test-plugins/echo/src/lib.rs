//! # echo (test plugin)
//!
//! `handle` returns one `set-custom-fields` action named "echo" that echoes
//! the delivery, so the integration tests can check that every delivery
//! field reaches the plugin. Keys, in order:
//!
//! | key                | value                                                      |
//! |--------------------|------------------------------------------------------------|
//! | `id`               | `id`                                                       |
//! | `event`            | `event`                                                    |
//! | `mailbox`          | `mailbox`                                                  |
//! | `subject`          | `subject`                                                  |
//! | `conversationId`   | `conversation-id`                                          |
//! | `from`             | `from` as `Name <address>`, or just `address` if no name   |
//! | `sender`           | `sender`, formatted like `from`                            |
//! | `hasAttachments`   | `true` / `false`                                           |
//! | `bodyText`         | `body-text`, or `<none>`                                   |
//! | `customFieldCount` | number of custom fields, or `<none>`                       |
//! | `toCount`          | number of To recipients                                    |
//! | `ccCount`          | number of Cc recipients                                    |
//! | `rawLen`           | length of `raw-json` in bytes                              |
//!
//! Note that the host truncates values longer than 100 characters.
//! The output message is "echo". Capabilities: none. Config keys: none.

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../../wit",
});

use enrichd::plugin::types::{
    Action, ActionValue, Delivery, EmailAddress, PluginError, PluginOutput,
};
use exports::enrichd::plugin::handler::Guest;

/// `Name <address>`, or `address` when the name is empty.
pub fn format_address(a: &EmailAddress) -> String {
    if a.name.is_empty() {
        a.address.clone()
    } else {
        format!("{} <{}>", a.name, a.address)
    }
}

/// The echoed fields, in order.
pub fn echo_fields(d: &Delivery) -> Vec<(String, String)> {
    let fields = [
        ("id", d.id.clone()),
        ("event", d.event.clone()),
        ("mailbox", d.mailbox.clone()),
        ("subject", d.subject.clone()),
        ("conversationId", d.conversation_id.clone()),
        ("from", format_address(&d.from)),
        ("sender", format_address(&d.sender)),
        ("hasAttachments", d.has_attachments.to_string()),
        (
            "bodyText",
            d.body_text.clone().unwrap_or_else(|| "<none>".to_string()),
        ),
        (
            "customFieldCount",
            d.custom_fields
                .as_ref()
                .map_or_else(|| "<none>".to_string(), |f| f.len().to_string()),
        ),
        ("toCount", d.to.len().to_string()),
        ("ccCount", d.cc.len().to_string()),
        ("rawLen", d.raw_json.len().to_string()),
    ];
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The plugin; exported as the `handler` interface.
struct Echo;

impl Guest for Echo {
    fn handle(delivery: Delivery) -> Result<PluginOutput, PluginError> {
        Ok(PluginOutput {
            actions: vec![Action {
                name: Some("echo".to_string()),
                value: ActionValue::SetCustomFields(echo_fields(&delivery)),
            }],
            message: Some("echo".to_string()),
        })
    }
}

export!(Echo);

#[cfg(test)]
mod tests {
    use super::*;

    fn address(name: &str, address: &str) -> EmailAddress {
        EmailAddress {
            name: name.to_string(),
            address: address.to_string(),
        }
    }

    #[test]
    fn echoes_every_field() {
        let d = Delivery {
            id: "AAMk1".to_string(),
            event: "received".to_string(),
            internet_message_id: "<m@x>".to_string(),
            received: "2024-01-01T00:00:00Z".to_string(),
            mailbox: "claims@contoso.com".to_string(),
            sender: address("", "boss@x.com"),
            from: address("Adele Vance", "adelev@contoso.com"),
            to: vec![address("", "a@x.com"), address("", "b@x.com")],
            cc: vec![],
            subject: "Hello".to_string(),
            has_attachments: true,
            timestamp: "2024-01-01T00:00:01Z".to_string(),
            conversation_id: "2L8WYB89Z".to_string(),
            body_text: None,
            custom_fields: Some(vec![("a".to_string(), "1".to_string())]),
            raw_json: "{}".to_string(),
        };
        let got = echo_fields(&d);
        let want = [
            ("id", "AAMk1"),
            ("event", "received"),
            ("mailbox", "claims@contoso.com"),
            ("subject", "Hello"),
            ("conversationId", "2L8WYB89Z"),
            ("from", "Adele Vance <adelev@contoso.com>"),
            ("sender", "boss@x.com"),
            ("hasAttachments", "true"),
            ("bodyText", "<none>"),
            ("customFieldCount", "1"),
            ("toCount", "2"),
            ("ccCount", "0"),
            ("rawLen", "2"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
