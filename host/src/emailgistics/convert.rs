//! Conversions between the Emailgistics types and the plugins' WIT types: a
//! parsed delivery into the `delivery` record, a plugin's output into the
//! host's [`Action`]s ([`output`], refusing it whole over `max_output_bytes`).
//! They live on the Emailgistics side so the plugin runtime knows WIT types
//! only.

use super::actions::{
    Action, ActionKind, Assign, AssignmentSpec, BodyType, EmailAddress, ForwardMessage,
    InlineAsset, SendMessage, Tag,
};
use super::payload::{Address, Delivery};
use crate::plugin::wit;
use crate::plugin::{Failure, Limits};

fn wit_address(a: &Address) -> wit::EmailAddress {
    wit::EmailAddress {
        name: a.name.clone(),
        address: a.address.clone(),
    }
}

/// The WIT record for a delivery. Built once per delivery and lent to every
/// plugin of the chain.
pub fn delivery(d: &Delivery) -> wit::Delivery {
    wit::Delivery {
        id: d.id.clone(),
        event: d.event.clone(),
        internet_message_id: d.internet_message_id.clone(),
        received: d.received.clone(),
        mailbox: d.mailbox.clone(),
        sender: wit_address(&d.sender),
        from: wit_address(&d.from),
        to: d.to.iter().map(wit_address).collect(),
        cc: d.cc.iter().map(wit_address).collect(),
        subject: d.subject.clone(),
        has_attachments: d.has_attachments,
        timestamp: d.timestamp.clone(),
        conversation_id: d.conversation_id.clone(),
        body_text: d.body_text.clone(),
        custom_fields: d
            .custom_fields
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        raw_json: d.raw_json.clone(),
    }
}

fn address(a: wit::EmailAddress) -> EmailAddress {
    EmailAddress {
        name: a.name,
        address: a.address,
    }
}

fn addresses(list: Vec<wit::EmailAddress>) -> Vec<EmailAddress> {
    list.into_iter().map(address).collect()
}

fn spec(s: wit::AssignmentSpec) -> AssignmentSpec {
    AssignmentSpec {
        users: s.users,
        assign_to_any_user: s.assign_to_any_user,
        ignore_availability: s.ignore_availability,
        ignore_max_messages: s.ignore_max_messages,
        assign_if_user_available_within_minutes: s.assign_if_user_available_within_minutes,
        aa_method: s.aa_method,
    }
}

/// A plugin's action as a host action (not yet validated).
fn action(a: wit::Action) -> Action {
    let kind = match a.value {
        wit::ActionValue::Assign(v) => ActionKind::Assign(Assign {
            main_assignment: spec(v.main_assignment),
            backup_assignments: v
                .backup_assignments
                .map(|b| b.into_iter().map(spec).collect()),
        }),
        wit::ActionValue::Tag(v) => ActionKind::Tag(Tag { tags: v.tags }),
        wit::ActionValue::SetCustomFields(v) => ActionKind::SetCustomFields(v),
        wit::ActionValue::SendMessage(v) => ActionKind::SendMessage(SendMessage {
            template_name: v.template_name,
            body: v.body,
            body_type: v.body_type.map(|t| match t {
                wit::BodyType::Html => BodyType::Html,
                wit::BodyType::Text => BodyType::Text,
            }),
            subject: v.subject,
            to_addresses: addresses(v.to_addresses),
            cc_addresses: v.cc_addresses.map(addresses),
            bcc_addresses: v.bcc_addresses.map(addresses),
            inline_assets: v.inline_assets.map(|list| {
                list.into_iter()
                    .map(|x| InlineAsset {
                        id: x.id,
                        filename: x.filename,
                        content_type: x.content_type,
                        base64_content: x.base64_content,
                    })
                    .collect()
            }),
        }),
        wit::ActionValue::ForwardMessage(v) => ActionKind::ForwardMessage(ForwardMessage {
            to_addresses: addresses(v.to_addresses),
            comment: v.comment,
        }),
    };
    Action { name: a.name, kind }
}

/// A plugin's output, converted to host actions (not yet validated).
#[derive(Debug)]
pub struct Output {
    /// Actions in the plugin's order.
    pub actions: Vec<Action>,
    /// The plugin's own note.
    pub message: Option<String>,
    /// The actions' size as `max_output_bytes` counts it.
    pub bytes: usize,
}

/// A plugin's WIT output as an [`Output`] (the plugin runtime has checked
/// `max_actions`), refused whole when its actions are over
/// `max_output_bytes`: a truncated list could drop the one action that
/// mattered, silently. The plugin's message is only a note, so it is cut
/// (marked) to `max_message_bytes` instead. Passed to
/// [`crate::plugin::Plugin::call`].
pub fn output(out: wit::PluginOutput, limits: &Limits) -> Result<Output, Failure> {
    let actions: Vec<Action> = out.actions.into_iter().map(action).collect();
    // An action over a list cap is dropped by validation and never
    // reaches the envelope, so it is not counted: serializing a
    // 90 000-item list only to count it would cost more than refusing it.
    let caps = super::validate::Caps::from(limits);
    let counted: Vec<&Action> = actions
        .iter()
        .filter(|a| super::validate::check_list_caps(a, &caps).is_ok())
        .collect();
    let bytes = crate::text::json_len(&counted);
    if bytes > limits.max_output_bytes {
        return Err(Failure::OutputLimit(format!(
            "{bytes} bytes of actions returned, at most {} allowed",
            limits.max_output_bytes
        )));
    }
    let mut message = out.message;
    if let Some(m) = &mut message {
        crate::text::cut_in_place(m, limits.max_message_bytes, "max_message_bytes");
    }
    Ok(Output {
        actions,
        message,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, tags: usize, len: usize) -> wit::Action {
        wit::Action {
            name: Some(name.into()),
            value: wit::ActionValue::Tag(wit::TagAction {
                tags: (0..tags)
                    .map(|i| format!("{i}{}", "t".repeat(len)))
                    .collect(),
            }),
        }
    }

    fn out(actions: Vec<wit::Action>, message: Option<String>) -> wit::PluginOutput {
        wit::PluginOutput { actions, message }
    }

    #[test]
    fn actions_within_max_output_bytes_are_converted_in_order() {
        let got = output(
            out(vec![tag("a", 1, 3), tag("b", 2, 3)], None),
            &Limits::default(),
        )
        .unwrap();
        let names: Vec<_> = got.actions.iter().map(|a| a.name.as_deref()).collect();
        assert_eq!(names, [Some("a"), Some("b")]);
        assert!(matches!(&got.actions[1].kind, ActionKind::Tag(t) if t.tags.len() == 2));
    }

    #[test]
    fn actions_over_max_output_bytes_are_refused_whole() {
        let limits = Limits {
            max_output_bytes: 1000,
            ..Limits::default()
        };
        // Ten tags of ~200 bytes: ~2 KB of JSON.
        let err = output(out(vec![tag("big", 10, 200)], None), &limits).unwrap_err();
        assert!(
            matches!(&err, Failure::OutputLimit(m) if m.contains("at most 1000 allowed")),
            "{err:?}"
        );
    }

    #[test]
    fn an_action_over_a_list_cap_is_not_counted_for_the_bytes() {
        // Over max_list_items, so validation drops it: its size does not
        // count against max_output_bytes.
        let limits = Limits {
            max_output_bytes: 1000,
            max_list_items: 5,
            ..Limits::default()
        };
        let got = output(
            out(vec![tag("flood", 10, 200), tag("ok", 1, 3)], None),
            &limits,
        )
        .unwrap();
        assert_eq!(got.actions.len(), 2, "converted; validation drops it later");
    }

    #[test]
    fn a_long_message_is_cut_and_marked() {
        let limits = Limits {
            max_message_bytes: 100,
            ..Limits::default()
        };
        let got = output(out(Vec::new(), Some("m".repeat(10_000))), &limits).unwrap();
        let message = got.message.unwrap();
        assert!(message.len() <= 100, "{}", message.len());
        assert!(message.contains("max_message_bytes"), "{message}");
    }
}
