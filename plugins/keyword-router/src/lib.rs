//! # keyword-router
//!
//! An enrichd delivery plugin that assigns a message according to keywords in
//! its subject line.
//!
//! ## Config keys (`[plugin.config]`)
//!
//! - `rules` (required): rules separated by `;`, each
//!   `kw1, kw2, ... => user1, user2, ...`. Keywords and users are
//!   comma-separated; whitespace around them is trimmed. A keyword may be
//!   several words (`car accident`). Users are display names or email
//!   addresses, as Emailgistics accepts them. Example:
//!
//!   ```toml
//!   rules = "claim, car accident => Joe Cool, ann@contoso.com; invoice => Billing Team"
//!   ```
//!
//! - `backup` (optional): `any` adds one backup assignment to any user of the
//!   mailbox (`backup-assignments = [{ assign-to-any-user: true }]`). Unset or
//!   blank means no backup; any other value is a config error.
//!
//! ## Behaviour
//!
//! The first rule, in order, any of whose keywords appears in the subject as a
//! whole word (case-insensitive; letters or digits may not touch either end;
//! runs of whitespace count as one space) wins. Within that rule the first
//! keyword, in order, that appears names the action. The plugin returns one
//! `assign` action named `Route by keyword "<kw>"` with
//! `main-assignment.users` = the rule's users and
//! `ignore-max-messages = true`. With no match it returns no actions and the
//! message `no keyword matched`.
//!
//! A missing or invalid `rules` (or `backup`) value, or a failing `config`
//! import, is reported as
//! `plugin-error::dependency("keyword-router config: <problem>")`, e.g.
//! `keyword-router config: rule 2 has no `=>``.
//!
//! ## Capabilities
//!
//! - `config` (required).
//! - `crm` and `log` are not used.
//!
//! The decisions live in [`logic`], which does not depend on the generated
//! bindings and is unit-tested on the host target.

pub mod logic;

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../wit",
});

use enrichd::plugin::config;
use enrichd::plugin::types::{
    Action, ActionValue, AssignAction, AssignmentSpec, Delivery, HostError, PluginError,
    PluginOutput,
};
use enrichd_plugin_support::HostFailure;
use exports::enrichd::plugin::handler::Guest;
use logic::Backup;

/// The plugin; exported as the `handler` interface.
struct KeywordRouter;

impl Guest for KeywordRouter {
    fn handle(delivery: Delivery) -> Result<PluginOutput, PluginError> {
        let rules = match read_config("rules")? {
            Some(value) => logic::parse_rules(&value).map_err(config_error)?,
            None => return Err(config_error("missing required key `rules`".to_string())),
        };
        let backup =
            logic::parse_backup(read_config("backup")?.as_deref()).map_err(config_error)?;

        let Some(route) = logic::route(&rules, &delivery.subject) else {
            return Ok(PluginOutput {
                actions: Vec::new(),
                message: Some("no keyword matched".to_string()),
            });
        };
        let backup_assignments = match backup {
            Backup::None => None,
            Backup::AnyUser => Some(vec![AssignmentSpec {
                assign_to_any_user: Some(true),
                ..spec()
            }]),
        };
        let action = Action {
            name: Some(logic::action_name(route.keyword)),
            value: ActionValue::Assign(AssignAction {
                main_assignment: AssignmentSpec {
                    users: Some(route.users.to_vec()),
                    ignore_max_messages: Some(true),
                    ..spec()
                },
                backup_assignments,
            }),
        };
        Ok(PluginOutput {
            actions: vec![action],
            message: Some(format!(
                "routed by keyword \"{}\" to {}",
                route.keyword,
                route.users.join(", ")
            )),
        })
    }
}

/// An assignment spec with every field unset.
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

/// `config::get(key)`, with host errors turned into dependency errors.
fn read_config(key: &str) -> Result<Option<String>, PluginError> {
    config::get(key).map_err(|e| {
        let failure = HostFailure::from(e);
        config_error(format!("cannot read `{key}`: {}", failure.describe()))
    })
}

fn config_error(problem: String) -> PluginError {
    PluginError::Dependency(format!("keyword-router config: {problem}"))
}

enrichd_plugin_support::host_failure_from!(HostError);

export!(KeywordRouter);
