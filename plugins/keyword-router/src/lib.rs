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
//! Built on `enrichd-pdk`: [`KeywordRouter`] is a [`Handler`] written
//! against the [`Host`] trait, unit-tested below with `FakeHost`; the
//! parsing and matching live in [`logic`].

pub mod logic;

use enrichd_pdk::{Action, Config, Delivery, Failure, Handler, Host, PluginOutput, Pool};
use logic::Backup;

/// The plugin; exported as the `handler` interface.
pub struct KeywordRouter;

impl Handler for KeywordRouter {
    fn handle(host: &impl Host, delivery: Delivery) -> Result<PluginOutput, Failure> {
        let config = Config::new(host, "keyword-router");
        let rules = logic::parse_rules(&config.require("rules")?).map_err(|p| config.error(p))?;
        let backup =
            logic::parse_backup(config.get("backup")?.as_deref()).map_err(|p| config.error(p))?;

        let Some(route) = logic::route(&rules, &delivery.subject) else {
            return Ok(PluginOutput::new(Vec::new(), "no keyword matched"));
        };
        let mut assign = Action::assign(Pool::users(route.users.clone()).ignore_max_messages(true));
        if backup == Backup::AnyUser {
            assign = assign.backup(Pool::any_user());
        }
        Ok(PluginOutput::new(
            vec![assign.named(logic::action_name(route.keyword))],
            format!(
                "routed by keyword \"{}\" to {}",
                route.keyword,
                route.users.join(", ")
            ),
        ))
    }
}

enrichd_pdk::export_delivery!(KeywordRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use enrichd_pdk::testing::{delivery, FakeHost};
    use enrichd_pdk::HostFailure;

    const RULES: &str = "invoice => Billing; coverage, policy => Policy Desk, ann@x.com";

    #[test]
    fn routes_the_seed_delivery_with_a_backup() {
        let host = FakeHost::new()
            .config("rules", RULES)
            .config("backup", "any");
        let out = KeywordRouter::handle(&host, delivery()).unwrap();
        let want =
            Action::assign(Pool::users(["Policy Desk", "ann@x.com"]).ignore_max_messages(true))
                .backup(Pool::any_user())
                .named("Route by keyword \"coverage\"");
        assert_eq!(out.actions, vec![want]);
        assert_eq!(
            out.message.as_deref(),
            Some("routed by keyword \"coverage\" to Policy Desk, ann@x.com")
        );
        assert_eq!(host.calls(), ["config.get rules", "config.get backup"]);
    }

    #[test]
    fn no_match_means_no_actions() {
        let host = FakeHost::new().config("rules", RULES);
        let d = Delivery {
            subject: "Hello".into(),
            ..delivery()
        };
        let out = KeywordRouter::handle(&host, d).unwrap();
        assert!(out.actions.is_empty());
        assert_eq!(out.message.as_deref(), Some("no keyword matched"));
    }

    #[test]
    fn config_problems_are_dependency_errors() {
        let err = |host: FakeHost| KeywordRouter::handle(&host, delivery()).unwrap_err();
        assert_eq!(
            err(FakeHost::new()),
            Failure::Dependency("keyword-router config: missing required key `rules`".into())
        );
        assert_eq!(
            err(FakeHost::new().config("rules", "a => b; c")),
            Failure::Dependency("keyword-router config: rule 2 has no `=>`".into())
        );
        assert_eq!(
            err(FakeHost::new()
                .config("rules", RULES)
                .config("backup", "all")),
            Failure::Dependency(
                "keyword-router config: `backup` must be `any` or unset, not `all`".into()
            )
        );
        assert_eq!(
            err(FakeHost::new().fail("config", HostFailure::Denied("not granted".into()))),
            Failure::Dependency(
                "keyword-router config: cannot read `rules`: denied: not granted".into()
            )
        );
    }
}
