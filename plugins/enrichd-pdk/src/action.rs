//! Typed builders for the five actions, producing the WIT [`Action`]
//! values. They make an action the host would drop hard to write: every
//! list the host requires non-empty (tags, fields, users, recipients) is a
//! [`NonEmpty`], which an array literal checks at compile time and a
//! runtime list through [`NonEmpty::new`]; minutes and methods are
//! unsigned; a `sendMessage` is either template or inline by construction.

use crate::bindings::delivery::enrichd::plugin::types::{
    AssignAction, AssignmentSpec, ForwardMessageAction, InlineAsset, SendMessageAction, TagAction,
};
use crate::{Action, ActionValue, BodyType, EmailAddress, PluginOutput};

/// A list with at least one item.
///
/// From an array literal, emptiness is a compile-time error; from a
/// runtime list, [`NonEmpty::new`] answers `None` for an empty one.
///
/// ```
/// use enrichd_pdk::{Action, NonEmpty};
/// let vip = Action::tag(["VIP"]);
/// let from_config: Vec<String> = Vec::new();
/// assert!(NonEmpty::<String>::new(from_config).is_none());
/// ```
///
/// ```compile_fail
/// let none: [&str; 0] = [];
/// let tag = enrichd_pdk::Action::tag(none); // error: the host drops an action with an empty list
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty<T>(Vec<T>);

impl<T> NonEmpty<T> {
    /// The items, or `None` when there are none.
    pub fn new<S: IntoItem<T>>(items: impl IntoIterator<Item = S>) -> Option<Self> {
        let items: Vec<T> = items.into_iter().map(IntoItem::into_item).collect();
        (!items.is_empty()).then_some(NonEmpty(items))
    }

    /// The items.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T> std::ops::Deref for NonEmpty<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, S: IntoItem<T>, const N: usize> From<[S; N]> for NonEmpty<T> {
    fn from(items: [S; N]) -> Self {
        const { assert!(N > 0, "the host drops an action with an empty list") };
        NonEmpty(items.into_iter().map(IntoItem::into_item).collect())
    }
}

/// A value that converts into an item of an action's list: a string into a
/// tag, user or address (`"ann@x.com"`), a `(key, value)` pair of strings
/// into a custom field.
pub trait IntoItem<T> {
    /// The item.
    fn into_item(self) -> T;
}

impl<S: Into<String>> IntoItem<String> for S {
    fn into_item(self) -> String {
        self.into()
    }
}

impl<K: Into<String>, V: Into<String>> IntoItem<(String, String)> for (K, V) {
    fn into_item(self) -> (String, String) {
        (self.0.into(), self.1.into())
    }
}

impl<S: Into<String>> IntoItem<EmailAddress> for S {
    fn into_item(self) -> EmailAddress {
        EmailAddress {
            name: String::new(),
            address: self.into(),
        }
    }
}

impl IntoItem<EmailAddress> for EmailAddress {
    fn into_item(self) -> EmailAddress {
        self
    }
}

impl Action {
    /// `tag`: apply existing mailbox tags (case-sensitive).
    pub fn tag(tags: impl Into<NonEmpty<String>>) -> Action {
        unnamed(ActionValue::Tag(TagAction {
            tags: tags.into().0,
        }))
    }

    /// `setCustomFields`: key → value (values over 100 characters are cut
    /// by the host).
    pub fn set_custom_fields(fields: impl Into<NonEmpty<(String, String)>>) -> Action {
        unnamed(ActionValue::SetCustomFields(fields.into().0))
    }

    /// `assign` to one user of `pool`; add fallbacks with [`Assign::backup`].
    pub fn assign(pool: Pool) -> Assign {
        Assign(AssignAction {
            main_assignment: pool.0,
            backup_assignments: None,
        })
    }

    /// `sendMessage` from the Emailgistics template `template` to `to`.
    pub fn send_template(
        template: impl Into<String>,
        to: impl Into<NonEmpty<EmailAddress>>,
    ) -> SendMessage {
        SendMessage(send(Some(template.into()), None, None, to.into()))
    }

    /// `sendMessage` with an inline `body` read as `body_type`, to `to`.
    pub fn send_inline(
        body: impl Into<String>,
        body_type: BodyType,
        to: impl Into<NonEmpty<EmailAddress>>,
    ) -> SendMessage {
        SendMessage(send(None, Some(body.into()), Some(body_type), to.into()))
    }

    /// `forwardMessage` to `to`.
    pub fn forward(to: impl Into<NonEmpty<EmailAddress>>) -> Forward {
        Forward(ForwardMessageAction {
            to_addresses: to.into().0,
            comment: None,
        })
    }

    /// The label shown in Emailgistics Admin logs.
    pub fn named(mut self, name: impl Into<String>) -> Action {
        self.name = Some(name.into());
        self
    }
}

fn unnamed(value: ActionValue) -> Action {
    Action { name: None, value }
}

fn send(
    template_name: Option<String>,
    body: Option<String>,
    body_type: Option<BodyType>,
    to: NonEmpty<EmailAddress>,
) -> SendMessageAction {
    SendMessageAction {
        template_name,
        body,
        body_type,
        subject: None,
        to_addresses: to.0,
        cc_addresses: None,
        bcc_addresses: None,
        inline_assets: None,
    }
}

/// One candidate pool of an `assign` (`AssignmentSpec`): users, or anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool(AssignmentSpec);

impl Pool {
    /// These users (display names or emails).
    pub fn users(users: impl Into<NonEmpty<String>>) -> Pool {
        Pool(spec(Some(users.into().0), None))
    }

    /// Every user of the mailbox.
    pub fn any_user() -> Pool {
        Pool(spec(None, Some(true)))
    }

    /// Ignore availability schedules (Emailgistics default: false).
    pub fn ignore_availability(mut self, yes: bool) -> Pool {
        self.0.ignore_availability = Some(yes);
        self
    }

    /// Ignore each user's max-messages cap (Emailgistics default: true).
    pub fn ignore_max_messages(mut self, yes: bool) -> Pool {
        self.0.ignore_max_messages = Some(yes);
        self
    }

    /// Assign if a user becomes available within `minutes`.
    pub fn available_within_minutes(mut self, minutes: u32) -> Pool {
        self.0.assign_if_user_available_within_minutes = Some(i64::from(minutes));
        self
    }

    /// The automatic-assignment method (1 or 2 in Emailgistics' examples).
    pub fn aa_method(mut self, method: u32) -> Pool {
        self.0.aa_method = Some(i64::from(method));
        self
    }
}

fn spec(users: Option<Vec<String>>, any: Option<bool>) -> AssignmentSpec {
    AssignmentSpec {
        users,
        assign_to_any_user: any,
        ignore_availability: None,
        ignore_max_messages: None,
        assign_if_user_available_within_minutes: None,
        aa_method: None,
    }
}

/// An `assign` being built; an [`Action`] through `into()` or `named`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assign(AssignAction);

impl Assign {
    /// A pool tried, in order, when the ones before find nobody.
    pub fn backup(mut self, pool: Pool) -> Assign {
        self.0
            .backup_assignments
            .get_or_insert_with(Vec::new)
            .push(pool.0);
        self
    }
}

/// A `sendMessage` being built; an [`Action`] through `into()` or `named`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessage(SendMessageAction);

impl SendMessage {
    /// The subject (in template mode, overrides the template's).
    pub fn subject(mut self, subject: impl Into<String>) -> SendMessage {
        self.0.subject = Some(subject.into());
        self
    }

    /// Cc recipients.
    pub fn cc(mut self, cc: impl Into<NonEmpty<EmailAddress>>) -> SendMessage {
        self.0.cc_addresses = Some(cc.into().0);
        self
    }

    /// Bcc recipients.
    pub fn bcc(mut self, bcc: impl Into<NonEmpty<EmailAddress>>) -> SendMessage {
        self.0.bcc_addresses = Some(bcc.into().0);
        self
    }

    /// An image of an HTML body, referenced there as `cid:<id>`;
    /// `base64_content` is the file's bytes, base64-encoded.
    pub fn asset(
        mut self,
        id: impl Into<String>,
        filename: impl Into<String>,
        content_type: impl Into<String>,
        base64_content: impl Into<String>,
    ) -> SendMessage {
        self.0
            .inline_assets
            .get_or_insert_with(Vec::new)
            .push(InlineAsset {
                id: id.into(),
                filename: filename.into(),
                content_type: content_type.into(),
                base64_content: base64_content.into(),
            });
        self
    }
}

/// A `forwardMessage` being built; an [`Action`] through `into()` or `named`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward(ForwardMessageAction);

impl Forward {
    /// A plain-text note placed above the original message.
    pub fn comment(mut self, comment: impl Into<String>) -> Forward {
        self.0.comment = Some(comment.into());
        self
    }
}

/// `From<builder> for Action` and `builder.named(..)` for each builder.
macro_rules! finish_builder {
    ($($builder:ident => $case:ident),*) => {$(
        impl From<$builder> for Action {
            fn from(b: $builder) -> Action {
                unnamed(ActionValue::$case(b.0))
            }
        }
        impl $builder {
            /// The finished action, with the label shown in Emailgistics Admin logs.
            pub fn named(self, name: impl Into<String>) -> Action {
                Action::from(self).named(name)
            }
        }
    )*};
}

finish_builder!(Assign => Assign, SendMessage => SendMessage, Forward => ForwardMessage);

impl PluginOutput {
    /// These actions, in order, and a note for the delivery record.
    pub fn new(actions: Vec<Action>, message: impl Into<String>) -> PluginOutput {
        PluginOutput {
            actions,
            message: Some(message.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_and_fields_from_literals_and_runtime_lists() {
        let tag = Action::tag(["VIP"]).named("Tag VIP");
        assert_eq!(tag.name.as_deref(), Some("Tag VIP"));
        assert_eq!(
            tag.value,
            ActionValue::Tag(TagAction {
                tags: vec!["VIP".into()]
            })
        );
        let fields = Action::set_custom_fields([("region", "EMEA")]);
        assert_eq!(
            fields.value,
            ActionValue::SetCustomFields(vec![("region".into(), "EMEA".into())])
        );
        assert_eq!(NonEmpty::<String>::new(Vec::<String>::new()), None);
        let tags = NonEmpty::new(vec!["a".to_string(), "b".to_string()]).unwrap();
        assert_eq!(tags.clone().into_vec(), vec!["a", "b"]);
        assert!(matches!(Action::tag(tags).value, ActionValue::Tag(t) if t.tags.len() == 2));
    }

    #[test]
    fn assign_with_options_and_backup() {
        let a: Action = Action::assign(
            Pool::users(["Joe Cool", "ann@contoso.com"])
                .ignore_max_messages(true)
                .available_within_minutes(30)
                .aa_method(2),
        )
        .backup(Pool::any_user().ignore_availability(true))
        .into();
        let ActionValue::Assign(a) = a.value else {
            panic!("not an assign")
        };
        assert_eq!(
            a.main_assignment.users,
            Some(vec!["Joe Cool".into(), "ann@contoso.com".into()])
        );
        assert_eq!(a.main_assignment.ignore_max_messages, Some(true));
        assert_eq!(
            a.main_assignment.assign_if_user_available_within_minutes,
            Some(30)
        );
        assert_eq!(a.main_assignment.aa_method, Some(2));
        let backup = a.backup_assignments.unwrap();
        assert_eq!(backup.len(), 1);
        assert_eq!(backup[0].assign_to_any_user, Some(true));
        assert_eq!(backup[0].users, None);
    }

    #[test]
    fn send_message_is_one_mode_by_construction() {
        let t = Action::send_template("Welcome", ["ann@x.com"])
            .subject("Hi")
            .cc(["b@x.com"])
            .named("Welcome");
        let ActionValue::SendMessage(m) = t.value else {
            panic!("not a send")
        };
        assert_eq!(m.template_name.as_deref(), Some("Welcome"));
        assert_eq!((m.body, m.body_type), (None, None));
        assert_eq!(m.to_addresses[0].address, "ann@x.com");
        assert_eq!(m.subject.as_deref(), Some("Hi"));
        let i = Action::send_inline("<img src=cid:logo>", BodyType::Html, ["a@x.com"])
            .bcc(["audit@x.com"])
            .asset("logo", "logo.png", "image/png", "iVBORw0KGgo=")
            .named("Inline");
        let ActionValue::SendMessage(m) = i.value else {
            panic!("not a send")
        };
        assert_eq!(m.template_name, None);
        assert_eq!(m.body_type, Some(BodyType::Html));
        assert_eq!(m.inline_assets.unwrap()[0].id, "logo");
        assert_eq!(m.bcc_addresses.unwrap()[0].address, "audit@x.com");
    }

    #[test]
    fn forward_with_comment() {
        let f = Action::forward(["claims@x.com"])
            .comment("FYI")
            .named("Fwd");
        assert_eq!(
            f.value,
            ActionValue::ForwardMessage(ForwardMessageAction {
                to_addresses: vec![EmailAddress {
                    name: String::new(),
                    address: "claims@x.com".into()
                }],
                comment: Some("FYI".into()),
            })
        );
    }
}
