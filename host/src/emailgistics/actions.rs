//! The Emailgistics action types as they appear in the response envelope.
//!
//! These are the host's own types, independent of the WIT bindings: plugins'
//! output is converted into them (see `plugin::convert`), validated
//! (`validate`) and serialized into the JSON shapes the Emailgistics
//! documentation gives (`{"type": "tag", "name": …, "value": {…}}`).
//! Optional fields that are `None` are left out of the JSON, so an action
//! reads exactly as a plugin author wrote it. They read back from the same
//! shapes (`enrichd test-webhook` checks an endpoint's answer with them);
//! unknown fields of a value are refused, as a typo would be lost.

use serde::{Deserialize, Serialize};

/// One action of the response envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Free label shown in Emailgistics Admin logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The action's type and payload (`type` + `value` in JSON).
    #[serde(flatten)]
    pub kind: ActionKind,
}

/// The action's `type` with its `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum ActionKind {
    /// `assign`
    Assign(Assign),
    /// `tag`
    Tag(Tag),
    /// `setCustomFields`: the value is the flat key → value map itself.
    /// A `Vec` keeps the plugin's order; duplicate keys are refused by
    /// validation so the JSON object has unique keys.
    SetCustomFields(
        #[serde(serialize_with = "ser_pairs", deserialize_with = "de_pairs")] Vec<(String, String)>,
    ),
    /// `sendMessage`
    SendMessage(SendMessage),
    /// `forwardMessage`
    ForwardMessage(ForwardMessage),
}

impl ActionKind {
    /// The `type` literal as Emailgistics spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            ActionKind::Assign(_) => "assign",
            ActionKind::Tag(_) => "tag",
            ActionKind::SetCustomFields(_) => "setCustomFields",
            ActionKind::SendMessage(_) => "sendMessage",
            ActionKind::ForwardMessage(_) => "forwardMessage",
        }
    }
}

/// `assign` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assign {
    /// The primary attempt.
    pub main_assignment: AssignmentSpec,
    /// Tried in order when the main assignment finds no eligible user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_assignments: Option<Vec<AssignmentSpec>>,
}

/// One candidate pool of an `assign` action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentSpec {
    /// Candidates by display name or email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// Every user of the mailbox is a candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign_to_any_user: Option<bool>,
    /// Ignore availability schedules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_availability: Option<bool>,
    /// Ignore max-messages caps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_max_messages: Option<bool>,
    /// Wait this many minutes for a user to become available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign_if_user_available_within_minutes: Option<i64>,
    /// Automatic-assignment method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aa_method: Option<i64>,
}

/// `tag` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    /// Tag names, case-sensitive.
    pub tags: Vec<String>,
}

/// How an inline body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    /// HTML body.
    Html,
    /// Plain-text body.
    Text,
}

/// An embedded image of an inline HTML `sendMessage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineAsset {
    /// Referenced as `cid:<id>` from the body.
    pub id: String,
    /// File name.
    pub filename: String,
    /// MIME type.
    pub content_type: String,
    /// Base64 of the bytes.
    pub base64_content: String,
}

/// `sendMessage` value (template mode or inline mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessage {
    /// Template mode: template name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// Inline mode: body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Inline mode: body type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_type: Option<BodyType>,
    /// Subject (overrides the template's in template mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Primary recipients.
    pub to_addresses: Vec<EmailAddress>,
    /// Cc recipients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cc_addresses: Option<Vec<EmailAddress>>,
    /// Bcc recipients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bcc_addresses: Option<Vec<EmailAddress>>,
    /// Embedded images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_assets: Option<Vec<InlineAsset>>,
}

/// `forwardMessage` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardMessage {
    /// Recipients.
    pub to_addresses: Vec<EmailAddress>,
    /// Plain-text note above the forwarded message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An address in the Emailgistics shape `{ "emailAddress": { name, address } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// Display name.
    pub name: String,
    /// The address.
    pub address: String,
}

impl Serialize for EmailAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Inner<'a> {
            name: &'a str,
            address: &'a str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Outer<'a> {
            email_address: Inner<'a>,
        }
        Outer {
            email_address: Inner {
                name: &self.name,
                address: &self.address,
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[serde(default)]
            name: String,
            address: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Outer {
            email_address: Inner,
        }
        let Outer {
            email_address: Inner { name, address },
        } = Outer::deserialize(d)?;
        Ok(EmailAddress { name, address })
    }
}

/// A JSON object's entries in their order, duplicates kept (validation
/// refuses them with a reason).
fn de_pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of string values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    d.deserialize_map(Pairs)
}

fn ser_pairs<S: serde::Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_serialize_in_the_documented_shapes() {
        let tag = Action {
            name: Some("Tag VIP".into()),
            kind: ActionKind::Tag(Tag {
                tags: vec!["VIP".into()],
            }),
        };
        assert_eq!(
            serde_json::to_value(&tag).unwrap(),
            json!({"name": "Tag VIP", "type": "tag", "value": {"tags": ["VIP"]}})
        );

        let fields = Action {
            name: None,
            kind: ActionKind::SetCustomFields(vec![
                ("claimNumber".into(), "CLM-1".into()),
                ("region".into(), "".into()),
            ]),
        };
        assert_eq!(
            serde_json::to_value(&fields).unwrap(),
            json!({"type": "setCustomFields", "value": {"claimNumber": "CLM-1", "region": ""}})
        );

        let assign = Action {
            name: None,
            kind: ActionKind::Assign(Assign {
                main_assignment: AssignmentSpec {
                    users: Some(vec!["Joe Cool".into()]),
                    ignore_max_messages: Some(true),
                    aa_method: Some(1),
                    ..Default::default()
                },
                backup_assignments: Some(vec![AssignmentSpec {
                    assign_to_any_user: Some(true),
                    assign_if_user_available_within_minutes: Some(120),
                    ..Default::default()
                }]),
            }),
        };
        assert_eq!(
            serde_json::to_value(&assign).unwrap(),
            json!({"type": "assign", "value": {
                "mainAssignment": {"users": ["Joe Cool"], "ignoreMaxMessages": true, "aaMethod": 1},
                "backupAssignments": [{"assignToAnyUser": true, "assignIfUserAvailableWithinMinutes": 120}]
            }})
        );

        let fwd = Action {
            name: Some("Escalate".into()),
            kind: ActionKind::ForwardMessage(ForwardMessage {
                to_addresses: vec![EmailAddress {
                    name: "UW".into(),
                    address: "uw@example.com".into(),
                }],
                comment: None,
            }),
        };
        assert_eq!(
            serde_json::to_value(&fwd).unwrap(),
            json!({"name": "Escalate", "type": "forwardMessage", "value": {
                "toAddresses": [{"emailAddress": {"name": "UW", "address": "uw@example.com"}}]
            }})
        );

        let send = Action {
            name: None,
            kind: ActionKind::SendMessage(SendMessage {
                body: Some("<p>hi</p>".into()),
                body_type: Some(BodyType::Html),
                to_addresses: vec![],
                inline_assets: Some(vec![InlineAsset {
                    id: "logo".into(),
                    filename: "logo.png".into(),
                    content_type: "image/png".into(),
                    base64_content: "iVBO".into(),
                }]),
                ..Default::default()
            }),
        };
        assert_eq!(
            serde_json::to_value(&send).unwrap(),
            json!({"type": "sendMessage", "value": {
                "body": "<p>hi</p>", "bodyType": "html", "toAddresses": [],
                "inlineAssets": [{"id": "logo", "filename": "logo.png", "contentType": "image/png", "base64Content": "iVBO"}]
            }})
        );

        // Each reads back from its JSON as it was.
        for action in [tag, fields, assign, fwd, send] {
            let text = serde_json::to_string(&action).unwrap();
            assert_eq!(
                serde_json::from_str::<Action>(&text).unwrap(),
                action,
                "{text}"
            );
        }
    }

    #[test]
    fn issue_13_an_action_with_an_unknown_type_or_field_does_not_read() {
        for (text, needle) in [
            (
                r#"{"type": "label", "value": {}}"#,
                "unknown variant `label`",
            ),
            (
                r#"{"type": "tag", "value": {"tag": ["VIP"]}}"#,
                "unknown field `tag`",
            ),
            (r#"{"type": "tag"}"#, "missing field `value`"),
            (
                r#"{"type": "setCustomFields", "value": {"a": 1}}"#,
                "expected a string",
            ),
        ] {
            let err = serde_json::from_str::<Action>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
