//! # every-action (test plugin)
//!
//! `handle` returns, in this order:
//!
//! 1. five valid actions, one of every type:
//!    - "valid assign": users `["Joe Cool"]` with `ignore-max-messages`, and
//!      one backup assignment to any user;
//!    - "valid tag": tags `["VIP"]`;
//!    - "valid set-custom-fields": `claimNumber = CLM-556677`;
//!    - "valid send-message (template)": template `Acknowledgement`, subject
//!      override, to `adelev@contoso.com`;
//!    - "valid forward-message": to `claims@contoso.com` with a comment;
//! 2. then actions the host must handle specially:
//!    - "invalid tag (empty)": an empty tags list (dropped by the host);
//!    - "invalid send-message (both modes)": template-name *and* body +
//!      body-type (dropped);
//!    - "long set-custom-fields (truncated)": `longField` with a
//!      150-character value (valid; the host truncates it to 100);
//!    - "invalid forward-message (bad address)": to-address `not-an-address`
//!      (dropped).
//!
//! The output message is "every action type, then invalid ones".
//! Capabilities: none. Config keys: none. The delivery is ignored.

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../../wit",
});

use enrichd::plugin::types::{
    Action, ActionValue, AssignAction, AssignmentSpec, BodyType, Delivery, EmailAddress,
    ForwardMessageAction, PluginError, PluginOutput, SendMessageAction, TagAction,
};
use exports::enrichd::plugin::handler::Guest;

/// The 150-character value of `longField`.
pub fn long_value() -> String {
    "0123456789".repeat(15)
}

fn address(name: &str, address: &str) -> EmailAddress {
    EmailAddress {
        name: name.to_string(),
        address: address.to_string(),
    }
}

fn spec() -> AssignmentSpec {
    AssignmentSpec {
        users: None,
        assign_to_any_user: None,
        ignore_availability: None,
        ignore_max_messages: None,
        assign_if_user_available_within_minutes: None,
        aa_method: None,
    }
}

fn template_message() -> SendMessageAction {
    SendMessageAction {
        template_name: Some("Acknowledgement".to_string()),
        body: None,
        body_type: None,
        subject: Some("We received your message".to_string()),
        to_addresses: vec![address("Adele Vance", "adelev@contoso.com")],
        cc_addresses: None,
        bcc_addresses: None,
        inline_assets: None,
    }
}

fn action(name: &str, value: ActionValue) -> Action {
    Action {
        name: Some(name.to_string()),
        value,
    }
}

/// Every action this plugin returns, in order.
pub fn actions() -> Vec<Action> {
    vec![
        action(
            "valid assign",
            ActionValue::Assign(AssignAction {
                main_assignment: AssignmentSpec {
                    users: Some(vec!["Joe Cool".to_string()]),
                    ignore_max_messages: Some(true),
                    ..spec()
                },
                backup_assignments: Some(vec![AssignmentSpec {
                    assign_to_any_user: Some(true),
                    ..spec()
                }]),
            }),
        ),
        action(
            "valid tag",
            ActionValue::Tag(TagAction {
                tags: vec!["VIP".to_string()],
            }),
        ),
        action(
            "valid set-custom-fields",
            ActionValue::SetCustomFields(vec![(
                "claimNumber".to_string(),
                "CLM-556677".to_string(),
            )]),
        ),
        action(
            "valid send-message (template)",
            ActionValue::SendMessage(template_message()),
        ),
        action(
            "valid forward-message",
            ActionValue::ForwardMessage(ForwardMessageAction {
                to_addresses: vec![address("Claims Team", "claims@contoso.com")],
                comment: Some("Forwarded by the every-action test plugin.".to_string()),
            }),
        ),
        action(
            "invalid tag (empty)",
            ActionValue::Tag(TagAction { tags: Vec::new() }),
        ),
        action(
            "invalid send-message (both modes)",
            ActionValue::SendMessage(SendMessageAction {
                body: Some("Thanks, we got it.".to_string()),
                body_type: Some(BodyType::Text),
                ..template_message()
            }),
        ),
        action(
            "long set-custom-fields (truncated)",
            ActionValue::SetCustomFields(vec![("longField".to_string(), long_value())]),
        ),
        action(
            "invalid forward-message (bad address)",
            ActionValue::ForwardMessage(ForwardMessageAction {
                to_addresses: vec![address("", "not-an-address")],
                comment: None,
            }),
        ),
    ]
}

/// The plugin; exported as the `handler` interface.
struct EveryAction;

impl Guest for EveryAction {
    fn handle(_delivery: Delivery) -> Result<PluginOutput, PluginError> {
        Ok(PluginOutput {
            actions: actions(),
            message: Some("every action type, then invalid ones".to_string()),
        })
    }
}

export!(EveryAction);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_value_is_150_chars() {
        assert_eq!(long_value().chars().count(), 150);
    }

    #[test]
    fn five_valid_then_four_special() {
        let names: Vec<String> = actions().into_iter().filter_map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                "valid assign",
                "valid tag",
                "valid set-custom-fields",
                "valid send-message (template)",
                "valid forward-message",
                "invalid tag (empty)",
                "invalid send-message (both modes)",
                "long set-custom-fields (truncated)",
                "invalid forward-message (bad address)",
            ]
        );
    }
}
