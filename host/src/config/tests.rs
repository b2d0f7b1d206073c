//! Unit tests of the config rules.

use super::*;

fn resolve(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    raw.resolve(Path::new("/etc/enrichd"), &|name| {
        (name == "HOOK_SECRET").then(|| "from-env-0123456789".to_owned())
    })
}

const MINIMAL: &str = r#"
    [[plugin]]
    name = "a"
    path = "a.wasm"
    capabilities = ["crm", "log"]
    [[route]]
    path = "/hook"
    chain = [{ plugin = "a" }]
"#;

#[test]
fn defaults_apply_and_paths_are_taken_from_the_config_dir() {
    let c = resolve(MINIMAL).unwrap();
    assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(c.data_dir, Path::new("/etc/enrichd/data"));
    assert_eq!(c.plugins[0].path, Path::new("/etc/enrichd/a.wasm"));
    assert_eq!(c.plugins[0].timeout, DEFAULT_PLUGIN_TIMEOUT);
    assert!(c.plugins[0].grants.allows(Capability::Crm));
    assert!(!c.plugins[0].grants.allows(Capability::Config));
    assert!(c.routes[0].secrets.is_empty());
}

#[test]
fn secrets_come_from_the_file_or_the_environment() {
    let c = resolve(&format!(
        "{MINIMAL}\nsecrets = [{{ value = \"literal-secret-123\" }}, {{ env = \"HOOK_SECRET\" }}]"
    ))
    .unwrap();
    assert_eq!(c.routes[0].secrets.len(), 2);
    let err = resolve(&format!("{MINIMAL}\nsecrets = [{{ env = \"NOPE\" }}]")).unwrap_err();
    assert!(
        err.to_string().contains("\"NOPE\", which is not set"),
        "{err}"
    );
    let err = resolve(&format!(
        "{MINIMAL}\nsecrets = [{{ env = \"HOOK_SECRET\", value = \"x\" }}]"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("exactly one"), "{err}");
}

#[test]
fn inconsistent_configs_are_refused_with_a_reason() {
    let cases = [
        ("listen = \"nowhere\"\n", "listen"),
        ("max_body_bytes = 0\n", "max_body_bytes"),
        ("bogus_key = 1\n", "unknown field"),
    ];
    for (prefix, needle) in cases {
        let err = resolve(&format!("{prefix}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{prefix}: {err}");
    }
    let err = resolve(&MINIMAL.replace("\"crm\"", "\"network\"")).unwrap_err();
    assert!(
        err.to_string().contains("unknown capability \"network\""),
        "{err}"
    );
    let err = resolve(&MINIMAL.replace("plugin = \"a\"", "plugin = \"b\"")).unwrap_err();
    assert!(err.to_string().contains("no [[plugin]] defines"), "{err}");
    let err = resolve(&MINIMAL.replace("/hook", "hook")).unwrap_err();
    assert!(err.to_string().contains("must start with '/'"), "{err}");
    let twice = format!("{MINIMAL}\n[[plugin]]\nname = \"a\"\npath = \"x.wasm\"\n");
    assert!(resolve(&twice)
        .unwrap_err()
        .to_string()
        .contains("defined twice"));
    let no_route = "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\n";
    assert!(resolve(no_route)
        .unwrap_err()
        .to_string()
        .contains("no [[route]]"));
}

#[test]
fn issue_15_data_dir_override_moves_the_component_cache_too() {
    let over = |text: &str, dir: &str| {
        let raw: RawConfig = toml::from_str(text).unwrap();
        raw.with_data_dir(dir.into())
            .resolve(Path::new("/etc/enrichd"), &|_| None)
            .unwrap()
    };
    let c = over(&format!("data_dir = \"/srv/file\"\n{MINIMAL}"), "/srv/flag");
    assert_eq!(c.data_dir, Path::new("/srv/flag"));
    assert_eq!(c.cache_dir, Path::new("/srv/flag/component-cache"));
    // Relative: from the config's directory, as the file's own.
    let c = over(MINIMAL, "other");
    assert_eq!(c.cache_dir, Path::new("/etc/enrichd/other/component-cache"));
    // A cache_dir of its own stays where the file puts it.
    let c = over(&format!("cache_dir = \"cache\"\n{MINIMAL}"), "/srv/flag");
    assert_eq!(c.cache_dir, Path::new("/etc/enrichd/cache"));
}

#[test]
fn sandbox_settings_have_defaults_and_are_checked() {
    let c = resolve(MINIMAL).unwrap();
    assert_eq!(c.delivery_budget, DEFAULT_DELIVERY_BUDGET);
    assert_eq!(c.allocator, Allocator::Auto);
    assert_eq!(c.cache_dir, Path::new("/etc/enrichd/data/component-cache"));
    let p = &c.plugins[0];
    assert_eq!(p.limits, Limits::default());
    assert_eq!(p.on_error, OnError::Skip);
    assert_eq!(p.sha256, None);

    let c = resolve(&format!(
        "delivery_budget_ms = 99999\nallocator = \"on-demand\"\n{}",
        MINIMAL.replace(
            "capabilities",
            "fuel = 5000\nmax_memory_bytes = 2097152\nmax_table_elements = 5000\nmax_instances = 8\nmax_actions = 3\nmax_output_bytes = 100\non_error = \"retry\"\n\
             sha256 = \"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"\ncapabilities"
        )
    ))
    .unwrap();
    assert_eq!(c.delivery_budget, Duration::from_millis(99_999));
    assert_eq!(c.allocator, Allocator::OnDemand);
    let p = &c.plugins[0];
    assert_eq!(
        p.limits,
        Limits {
            fuel: Some(5000),
            max_memory_bytes: 2 << 20,
            max_table_elements: 5000,
            max_instances: 8,
            max_actions: 3,
            max_output_bytes: 100,
            ..Limits::default()
        }
    );
    assert_eq!(p.on_error, OnError::Retry);
    assert_eq!(p.sha256.unwrap()[..2], [0xe3, 0xb0]);

    for (setting, needle) in [
        ("delivery_budget_ms = 100000\n", "below 100000"),
        ("delivery_budget_ms = 0\n", "above 0"),
        ("allocator = \"magic\"\n", "unknown variant"),
    ] {
        let err = resolve(&format!("{setting}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{setting}: {err}");
    }
    for (setting, needle) in [
        ("fuel = 0", "fuel must be > 0"),
        (
            "max_memory_bytes = 1000",
            "max_memory_bytes must be between",
        ),
        ("max_actions = 0", "must be > 0"),
        (
            "max_instances = 0",
            "max_instances and max_table_elements must be > 0",
        ),
        (
            "max_table_elements = 0",
            "max_instances and max_table_elements must be > 0",
        ),
        ("on_error = \"ignore\"", "unknown variant"),
        ("sha256 = \"abc\"", "sha256 is not 64 hex digits"),
    ] {
        let err = resolve(&MINIMAL.replace("capabilities", &format!("{setting}\ncapabilities")))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{setting}: {err}");
    }
}

#[test]
fn idempotency_and_admin_settings() {
    let c = resolve(MINIMAL).unwrap();
    assert_eq!(c.admin_listen, Some(DEFAULT_ADMIN_LISTEN.parse().unwrap()));
    assert_eq!(c.store.retention, DEFAULT_RETENTION);
    assert_eq!(c.store.flush, FlushPolicy::Always);
    let c = resolve(&format!(
        "admin_listen = \"off\"\n[idempotency]\nretention_hours = 1\nmax_records = 10\nflush = \"periodic\"\nflush_every_ms = 50\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(c.admin_listen, None);
    assert_eq!(c.store.retention, Duration::from_secs(3600));
    assert_eq!(c.store.max_records, 10);
    assert_eq!(c.store.flush, FlushPolicy::Periodic);
    assert_eq!(c.flush_every_ms, 50);
    for (setting, needle) in [
        ("admin_listen = \"everywhere\"\n", "admin_listen"),
        ("[idempotency]\nretention_hours = 0\n", "must be > 0"),
        ("[idempotency]\nflush = \"sometimes\"\n", "unknown variant"),
    ] {
        let err = resolve(&format!("{setting}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{setting}: {err}");
    }
}

#[test]
fn crm_sources_are_validated_and_granted_by_name() {
    let sources = r#"
        [[crm]]
        name = "local"
        kind = "embedded"
        seed = "crm.csv"
        [[crm]]
        name = "remote"
        kind = "http"
        email_url = "https://crm.example/api?email={email}"
        headers = [{ name = "Authorization", env = "HOOK_SECRET", prefix = "Bearer " }]
        fields = { region = "/address/region" }
        timeout_ms = 1500
        [crm.cache]
        ttl_secs = 60
        negative_ttl_secs = 5
    "#;
    let c = resolve(&format!("{sources}{MINIMAL}")).unwrap();
    assert_eq!(
        c.plugins[0].crm_sources,
        vec![0, 1],
        "all sources by default"
    );
    assert_eq!(c.crm[1].cache.ttl, Duration::from_secs(60));
    assert_eq!(c.crm[0].cache.ttl, DEFAULT_TTL);
    match &c.crm[1].backend {
        CrmBackendSpec::Http(h) => {
            assert_eq!(
                h.headers,
                vec![(
                    "Authorization".to_owned(),
                    "Bearer from-env-0123456789".to_owned()
                )]
            );
            assert_eq!(
                h.fields,
                vec![("region".to_owned(), "/address/region".to_owned())]
            );
            assert_eq!(h.timeout, Duration::from_millis(1500));
        }
        other => panic!("{other:?}"),
    }
    let c = resolve(&format!(
        "{sources}{}",
        MINIMAL.replace("capabilities", "crm_sources = [\"remote\"]\ncapabilities")
    ))
    .unwrap();
    assert_eq!(c.plugins[0].crm_sources, vec![1]);

    for (src, needle) in [
        ("[[crm]]\nname = \"x\"\nkind = \"http\"\n", "needs email_url"),
        ("[[crm]]\nname = \"x\"\nkind = \"embedded\"\nemail_url = \"http://a/{email}\"\n", "are for kind"),
        ("[[crm]]\nname = \"x\"\nkind = \"ldap\"\n", "unknown variant"),
        (
            "[[crm]]\nname = \"x\"\nkind = \"http\"\nemail_url = \"http://a/{email}\"\nheaders = [{ name = \"A\", env = \"NOPE\" }]\n",
            "\"NOPE\", which is not set",
        ),
        ("[[crm]]\nname = \"x\"\nkind = \"embedded\"\n[[crm]]\nname = \"x\"\nkind = \"embedded\"\n", "used twice"),
    ] {
        let err = resolve(&format!("{src}{MINIMAL}")).unwrap_err().to_string();
        assert!(err.contains(needle), "{src}: {err}");
    }
    let err = resolve(&MINIMAL.replace("capabilities", "crm_sources = [\"nope\"]\ncapabilities"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no CRM source named \"nope\""), "{err}");
}

#[test]
fn engagelab_routes_need_app_keys_and_known_plugins() {
    let el = "[[engagelab]]\npath = \"/el\"\napp_keys = [{ env = \"HOOK_SECRET\" }, { value = \"k2\" }]\nchain = [{ plugin = \"a\" }]\n";
    let c = resolve(&format!("{MINIMAL}{el}")).unwrap();
    assert_eq!(c.event_routes[0].app_keys.len(), 2);
    assert_eq!(c.event_routes[0].replay_window, DEFAULT_REPLAY_WINDOW);
    assert_eq!(c.event_routes[0].chain, vec![0]);
    assert_eq!(c.events.max_attempts, DEFAULT_EVENT_ATTEMPTS);
    for (bad, needle) in [
        (
            el.replace("[{ env = \"HOOK_SECRET\" }, { value = \"k2\" }]", "[]"),
            "app key is required",
        ),
        (el.replace("\"/el\"", "\"/hook\""), "not be used twice"),
        (
            el.replace("plugin = \"a\"", "plugin = \"zz\""),
            "no [[plugin]] defines",
        ),
        (
            el.replace("HOOK_SECRET", "NOPE"),
            "\"NOPE\", which is not set",
        ),
    ] {
        let err = resolve(&format!("{MINIMAL}{bad}")).unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

#[test]
fn mailbox_filters_are_lower_cased() {
    let c = resolve(&MINIMAL.replace(
        "{ plugin = \"a\" }",
        "{ plugin = \"a\", mailboxes = [\" Claims@Example.com \"] }",
    ))
    .unwrap();
    assert_eq!(
        c.routes[0].chain[0].mailboxes.as_deref(),
        Some(&["claims@example.com".to_owned()][..])
    );
}

#[test]
fn the_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let c = Config::load(&dir.join("enrichd.toml")).unwrap();
    assert!(!c.routes.is_empty() && !c.plugins.is_empty());
    match &c.crm[0].backend {
        CrmBackendSpec::Embedded { seed } => {
            assert!(seed.as_ref().unwrap().ends_with("crm-sample.jsonl"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn import_budgets_have_defaults_overrides_and_refuse_zero() {
    let c = resolve(MINIMAL).unwrap();
    let l = c.plugins[0].limits;
    assert_eq!(l.max_log_lines, DEFAULT_MAX_LOG_LINES);
    assert_eq!(l.max_log_bytes, DEFAULT_MAX_LOG_BYTES);
    assert_eq!(l.kv_max_keys, DEFAULT_KV_MAX_KEYS);
    assert_eq!(l.kv_max_bytes, DEFAULT_KV_MAX_BYTES);
    assert_eq!(l.kv_ops_per_call, DEFAULT_KV_OPS_PER_CALL);
    assert_eq!(l.kv_write_bytes_per_call, DEFAULT_KV_WRITE_BYTES_PER_CALL);
    assert_eq!(l.crm_lookups_per_call, DEFAULT_CRM_LOOKUPS_PER_CALL);
    assert_eq!(c.sled_cache_bytes, DEFAULT_SLED_CACHE_BYTES);

    let c = resolve(&format!(
        "sled_cache_bytes = 2097152\n{}",
        MINIMAL.replace(
            "capabilities",
            "max_log_lines = 7\nmax_log_bytes = 700\nkv_max_keys = 5\nkv_max_bytes = 5000\n\
             kv_ops_per_call = 9\nkv_write_bytes_per_call = 900\ncrm_lookups_per_call = 3\ncapabilities"
        )
    ))
    .unwrap();
    let l = c.plugins[0].limits;
    assert_eq!(
        (
            l.max_log_lines,
            l.max_log_bytes,
            l.kv_max_keys,
            l.kv_max_bytes
        ),
        (7, 700, 5, 5000)
    );
    assert_eq!(
        (
            l.kv_ops_per_call,
            l.kv_write_bytes_per_call,
            l.crm_lookups_per_call
        ),
        (9, 900, 3)
    );
    assert_eq!(c.sled_cache_bytes, 2 << 20);

    for key in [
        "max_log_lines",
        "max_log_bytes",
        "kv_max_keys",
        "kv_max_bytes",
        "kv_ops_per_call",
        "kv_write_bytes_per_call",
        "crm_lookups_per_call",
    ] {
        let err = resolve(&MINIMAL.replace("capabilities", &format!("{key} = 0\ncapabilities")))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{key} must be > 0")), "{key}: {err}");
    }
    let err = resolve(&format!("sled_cache_bytes = 1000\n{MINIMAL}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sled_cache_bytes = 1000"), "{err}");
}

#[test]
fn breaker_settings_have_defaults_are_per_plugin_and_are_checked() {
    let with = |setting: &str| {
        resolve(&MINIMAL.replace("capabilities", &format!("{setting}\ncapabilities")))
    };
    let b = resolve(MINIMAL).unwrap().plugins[0].limits.breaker;
    assert_eq!(b.failures, DEFAULT_BREAKER_FAILURES);
    assert_eq!(b.cooldown, DEFAULT_BREAKER_COOLDOWN);
    let b = with("breaker_failures = 3\nbreaker_cooldown_ms = 1500")
        .unwrap()
        .plugins[0]
        .limits
        .breaker;
    assert_eq!(
        b,
        BreakerSettings {
            failures: 3,
            cooldown: Duration::from_millis(1500)
        }
    );
    // 0 turns the breaker off; it is not an error.
    assert_eq!(
        with("breaker_failures = 0").unwrap().plugins[0]
            .limits
            .breaker
            .failures,
        0
    );
    for setting in ["breaker_cooldown_ms = 0", "breaker_cooldown_ms = 3600001"] {
        let err = with(setting).unwrap_err().to_string();
        assert!(
            err.contains("breaker_cooldown_ms must be between 1 and 3600000"),
            "{setting}: {err}"
        );
    }
    let err = with("breaker_failures = -1").unwrap_err().to_string();
    assert!(err.contains("breaker_failures"), "{err}");
}

// Senders (issue 9): queue cap, connection cap, body-read timeout.
#[test]
fn sender_bounds_have_defaults_and_are_checked() {
    let c = resolve(MINIMAL).unwrap();
    assert_eq!(c.events.max_queued, DEFAULT_MAX_QUEUED_EVENTS);
    assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
    let set = "max_connections = 8\nbody_read_timeout_ms = 1500\n[events]\nmax_queued = 3\n";
    let c = resolve(&format!("{set}{MINIMAL}")).unwrap();
    assert_eq!(c.events.max_queued, 3);
    assert_eq!(c.max_connections, 8);
    assert_eq!(c.body_read_timeout, Duration::from_millis(1500));
    // The default follows a delivery budget shorter than itself.
    let c = resolve(&format!("delivery_budget_ms = 2000\n{MINIMAL}")).unwrap();
    assert_eq!(c.body_read_timeout, Duration::from_millis(2000));
    for (bad, needle) in [
        ("max_connections = 0\n", "max_connections = 0"),
        ("max_connections = 1000001\n", "max_connections = 1000001"),
        ("body_read_timeout_ms = 0\n", "body_read_timeout_ms = 0"),
        (
            "delivery_budget_ms = 5000\nbody_read_timeout_ms = 5001\n",
            "at most the delivery budget",
        ),
        ("[events]\nmax_queued = 0\n", "max_queued = 0"),
        ("[events]\nmax_queued = 10000001\n", "max_queued = 10000001"),
    ] {
        // Top-level keys must come before the first table.
        let text = if bad.starts_with('[') {
            format!("{MINIMAL}{bad}")
        } else {
            format!("{bad}{MINIMAL}")
        };
        let err = resolve(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

#[test]
fn output_caps_have_defaults_overrides_and_bounds() {
    let c = resolve(MINIMAL).unwrap();
    let l = c.plugins[0].limits;
    assert_eq!(l.max_list_items, DEFAULT_MAX_LIST_ITEMS);
    assert_eq!(l.max_name_bytes, DEFAULT_MAX_NAME_BYTES);
    assert_eq!(l.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);

    let with =
        |keys: &str| resolve(&MINIMAL.replace("capabilities", &format!("{keys}\ncapabilities")));
    let l = with("max_list_items = 5\nmax_name_bytes = 32\nmax_message_bytes = 128")
        .unwrap()
        .plugins[0]
        .limits;
    assert_eq!(
        (l.max_list_items, l.max_name_bytes, l.max_message_bytes),
        (5, 32, 128)
    );
    for (keys, needle) in [
        ("max_list_items = 0", "max_list_items"),
        ("max_name_bytes = 15", "max_name_bytes"),
        ("max_message_bytes = 127", "max_message_bytes"),
    ] {
        let err = with(keys).unwrap_err().to_string();
        assert!(err.contains(needle), "{keys}: {err}");
    }
}

#[test]
fn the_example_config_is_valid_and_spells_out_the_defaults() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/enrichd.toml"
    ));
    let c = Config::load(path).expect("examples/enrichd.toml is valid");
    assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
    assert_eq!(c.events.max_queued, DEFAULT_MAX_QUEUED_EVENTS);
    let tracker = c
        .plugins
        .iter()
        .find(|p| p.name == "engagement-tracker")
        .expect("engagement-tracker");
    // The values written out in the example are the defaults.
    assert_eq!(tracker.limits, Limits::default());
}

#[test]
fn issue_16_the_component_cache_bounds_have_defaults_and_overrides() {
    let c = resolve(MINIMAL).unwrap();
    assert_eq!(c.cache, CachePolicy::default());
    assert_eq!(c.cache.max_bytes, 1 << 30);
    assert_eq!(c.cache.grace, Duration::from_secs(7 * 24 * 3600));

    let c = resolve(&format!(
        "cache_max_bytes = 0\ncache_grace_hours = 2\n{MINIMAL}"
    ))
    .unwrap();
    // 0: keep only the entries in use.
    assert_eq!(c.cache.max_bytes, 0);
    assert_eq!(c.cache.grace, Duration::from_secs(2 * 3600));
    // A huge hour count means "forever", not an overflow.
    let c = resolve(&format!("cache_grace_hours = {}\n{MINIMAL}", i64::MAX)).unwrap();
    assert!(c.cache.grace >= DEFAULT_CACHE_GRACE);

    for (text, expected) in [
        ("cache_max_bytes = -1", "cache_max_bytes"),
        ("cache_grace_hours = \"7d\"", "cache_grace_hours"),
        // Durations are whole hours under a key that says so.
        ("cache_grace = 7", "unknown field `cache_grace`"),
    ] {
        let err = resolve(&format!("{text}\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

/// Found by the property test `config_resolve_never_panics_on_numbers`:
/// `retention_hours` and `dedupe_hours` were multiplied by 3600 unchecked, so
/// a huge value panicked (debug) or wrapped to a short window (release).
#[test]
fn huge_hour_counts_do_not_overflow() {
    for table in ["[idempotency]\nretention_hours", "[events]\ndedupe_hours"] {
        let c = resolve(&format!("{table} = {}\n{MINIMAL}", i64::MAX)).unwrap();
        assert!(c.store.retention >= DEFAULT_RETENTION);
        assert!(c.events.dedupe_window >= DEFAULT_DEDUPE_WINDOW);
    }
}

#[test]
fn storage_is_sled_by_default_and_redis_takes_a_url_from_the_file_or_the_environment() {
    let c = resolve(MINIMAL).unwrap();
    assert_eq!(c.storage, StorageSpec::Sled);
    assert!(matches!(
        c.storage_settings().backend,
        crate::storage::Backend::Sled(ref s) if s.data_dir == Path::new("/etc/enrichd/data")
    ));

    let c = resolve(&format!(
        "[storage]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(
        c.storage,
        StorageSpec::Redis {
            url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: DEFAULT_REDIS_KEY_PREFIX.into(),
            event_lease: DEFAULT_EVENT_LEASE,
        }
    );
    let c = resolve(&format!(
        "[storage]\nkind = \"redis\"\nurl = {{ env = \"HOOK_SECRET\" }}\nkey_prefix = \"b:\"\nevent_lease_ms = 9000\n{MINIMAL}"
    ));
    // The variable holds no redis:// URL: refused, naming the rule.
    assert!(c.unwrap_err().to_string().contains("redis://"));

    for (storage, expected) in [
        ("kind = \"redis\"\n", "needs a url"),
        (
            "kind = \"redis\"\nurl = { env = \"NOPE\" }\n",
            "NOPE is not set",
        ),
        ("kind = \"redis\"\nurl = \"http://x\"\n", "redis://"),
        (
            "kind = \"redis\"\nurl = \"redis://x\"\nkey_prefix = \"\"\n",
            "key_prefix",
        ),
        ("url = \"redis://x\"\n", "are for kind = \"redis\""),
        ("kind = \"postgres\"\n", "unknown variant"),
        (
            "kind = \"redis\"\nurl = \"redis://x\"\nport = 1\n",
            "unknown field",
        ),
    ] {
        let err = resolve(&format!("[storage]\n{storage}{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains(expected), "{storage}: {err}");
    }
}

#[test]
fn the_event_lease_must_outlast_the_slowest_event_chain() {
    let events = r#"
        [[plugin]]
        name = "ev"
        path = "ev.wasm"
        timeout_ms = 4000
        [[engagelab]]
        path = "/el"
        app_keys = [{ value = "app-key-0123456789" }]
        chain = [{ plugin = "ev" }, { plugin = "ev" }]
    "#;
    let redis = "[storage]\nkind = \"redis\"\nurl = \"redis://x\"\n";
    let err = resolve(&format!("{redis}event_lease_ms = 8000\n{MINIMAL}{events}")).unwrap_err();
    assert!(
        err.to_string()
            .contains("event_lease_ms = 8000 must be longer"),
        "{err}"
    );
    resolve(&format!("{redis}event_lease_ms = 8001\n{MINIMAL}{events}")).unwrap();
}

#[test]
fn issue_12_http_needs_allowed_hosts_and_its_budgets_have_defaults_overrides_and_refuse_zero() {
    let with = |extra: &str| MINIMAL.replace("capabilities = [\"crm\", \"log\"]", extra);
    let c = resolve(MINIMAL).unwrap();
    let l = c.plugins[0].limits;
    assert_eq!(l.http_requests_per_call, DEFAULT_HTTP_REQUESTS_PER_CALL);
    assert_eq!(l.http_response_bytes, DEFAULT_HTTP_RESPONSE_BYTES);
    assert_eq!(l.http_request_bytes, DEFAULT_HTTP_REQUEST_BYTES);
    assert_eq!(l.http_connections, DEFAULT_HTTP_CONNECTIONS);
    assert!(c.plugins[0].allowed_hosts.is_empty());

    let c = resolve(&with(
        "capabilities = [\"http\"]\n\
         allowed_hosts = [\"https://Fraud.example.com\", \"http://127.0.0.1:8089\"]\n\
         http_requests_per_call = 2\nhttp_response_bytes = 1000\n\
         http_request_bytes = 500\nhttp_connections = 3",
    ))
    .unwrap();
    let p = &c.plugins[0];
    assert!(p.grants.allows(Capability::Http));
    let hosts: Vec<String> = p.allowed_hosts.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        hosts,
        ["https://fraud.example.com:443", "http://127.0.0.1:8089"]
    );
    let l = p.limits;
    assert_eq!(
        (
            l.http_requests_per_call,
            l.http_response_bytes,
            l.http_request_bytes,
            l.http_connections
        ),
        (2, 1000, 500, 3)
    );

    for (extra, needle) in [
        (
            "capabilities = [\"http\"]",
            "capability `http` needs allowed_hosts",
        ),
        (
            "capabilities = [\"http\"]\nallowed_hosts = []",
            "capability `http` needs allowed_hosts",
        ),
        (
            "allowed_hosts = [\"https://a.example\"]",
            "allowed_hosts without capability `http`",
        ),
        (
            "capabilities = [\"http\"]\nallowed_hosts = [\"https://*.example.com\"]",
            "no wildcards",
        ),
        (
            "capabilities = [\"http\"]\nallowed_hosts = [\"a.example\"]",
            "must start with http:// or https://",
        ),
        (
            "capabilities = [\"http\"]\nallowed_hosts = [\"https://a.example/api\"]",
            "not a path",
        ),
        (
            "capabilities = [\"web\"]",
            "known: log, config, crm, kv, http",
        ),
    ] {
        let err = resolve(&with(extra)).unwrap_err().to_string();
        assert!(err.contains(needle), "{extra}: {err}");
    }
    for key in [
        "http_requests_per_call",
        "http_response_bytes",
        "http_request_bytes",
        "http_connections",
    ] {
        let err = resolve(&MINIMAL.replace("capabilities", &format!("{key} = 0\ncapabilities")))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{key} must be > 0")), "{key}: {err}");
    }
}

#[test]
fn issue_13_allow_ips_and_trusted_proxies() {
    // Absent: everyone; present: parsed.
    assert_eq!(resolve(MINIMAL).unwrap().routes[0].allow_ips, None);
    let c = resolve(&format!(
        "trusted_proxies = [\"10.0.0.0/8\"]\n{MINIMAL}\nallow_ips = [\"203.0.113.7/32\", \"2001:db8::/32\"]\n\
         [[engagelab]]\npath = \"/el\"\napp_keys = [{{ value = \"k\" }}]\nallow_ips = [\"127.0.0.2\"]\n"
    ))
    .unwrap();
    let allow = c.routes[0].allow_ips.as_ref().unwrap();
    assert_eq!(allow.to_strings(), ["203.0.113.7/32", "2001:db8::/32"]);
    assert_eq!(
        c.event_routes[0].allow_ips.as_ref().unwrap().to_strings(),
        ["127.0.0.2/32"]
    );
    assert_eq!(c.trusted_proxies.to_strings(), ["10.0.0.0/8"]);
    // Errors name the route and the entry.
    let cases = [
        (format!("{MINIMAL}\nallow_ips = [\"203.0.113.300/32\"]"), "route \"/hook\": allow_ips: \"203.0.113.300/32\" is not a CIDR"),
        (format!("{MINIMAL}\nallow_ips = []"), "route \"/hook\": allow_ips is empty"),
        (format!("trusted_proxies = [\"10.0.0.0/99\"]\n{MINIMAL}"), "trusted_proxies: \"10.0.0.0/99\" is not a CIDR"),
        (format!("{MINIMAL}\n[[engagelab]]\npath = \"/el\"\napp_keys = [{{ value = \"k\" }}]\nallow_ips = [\"x\"]\n"), "engagelab \"/el\": allow_ips: \"x\""),
    ];
    for (text, want) in cases {
        let err = resolve(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn issue_13_tls_paths_come_from_the_config_dir_and_its_values_are_checked() {
    assert!(
        resolve(MINIMAL).unwrap().tls.is_none(),
        "plain HTTP by default"
    );
    // `[tls]` after the route's keys would belong to the route: put it first.
    let with = |tls: &str| {
        format!("[tls]\ncert = \"tls/cert.pem\"\nkey = \"/k/key.pem\"\n{tls}\n{MINIMAL}")
    };
    let tls = resolve(&with("")).unwrap().tls.expect("[tls]");
    assert_eq!(tls.files.cert, Path::new("/etc/enrichd/tls/cert.pem"));
    assert_eq!(tls.files.key, Path::new("/k/key.pem"));
    assert_eq!(tls.min_version, MinVersion::Tls12);
    assert_eq!(tls.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
    let tls = resolve(&with("min_version = \"1.3\"\nhandshake_timeout_ms = 250"))
        .unwrap()
        .tls
        .unwrap();
    assert_eq!(tls.min_version, MinVersion::Tls13);
    assert_eq!(tls.handshake_timeout, Duration::from_millis(250));
    for (extra, needle) in [
        ("min_version = \"1.1\"", "must be \"1.2\" or \"1.3\""),
        (
            "handshake_timeout_ms = 0",
            "handshake_timeout_ms = 0: must be above 0",
        ),
        ("handshake_timeout_ms = 30001", "at most 30000"),
        ("ciphers = \"all\"", "unknown field"),
    ] {
        let err = resolve(&with(extra)).unwrap_err().to_string();
        assert!(err.contains(needle), "{extra}: {err}");
    }
    let err = resolve(&format!("[tls]\ncert = \"c.pem\"\n{MINIMAL}")).unwrap_err();
    assert!(err.to_string().contains("missing field `key`"), "{err}");
}
