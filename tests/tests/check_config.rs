//! Issue 13: `enrichd check-config` and `enrichd --version` on the real
//! binary. A good config exits 0 with the summary; each kind of problem
//! exits 1 with its message, all of a file's plugin problems at once.

use std::process::{Command, Output};

use enrichd_tests::{enrichd_bin, plugin_path, plugin_toml, plugin_toml_as, SHARED_CACHE};

/// Write `config` (with the shared component cache) to a temp dir and run
/// `check-config` on it, with `env` set.
fn check(config: &str, env: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("enrichd.toml");
    std::fs::write(&path, format!("cache_dir = {SHARED_CACHE:?}\n{config}")).unwrap();
    let out = Command::new(enrichd_bin!())
        .args(["check-config", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run enrichd check-config");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn good() -> String {
    format!(
        "listen = \"0.0.0.0:8443\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n{}{}\
         [[crm]]\nname = \"main\"\nkind = \"embedded\"\n\
         [[route]]\npath = \"/hook\"\nsecrets = [{{ env = \"HOOK_SECRET\" }}]\nallow_ips = [\"203.0.113.7/32\"]\n\
         chain = [{{ plugin = \"crm-enrich\" }}, {{ plugin = \"echo\" }}]\n\
         [[engagelab]]\npath = \"/el\"\napp_keys = [{{ value = \"k\" }}]\nchain = [{{ plugin = \"event-echo\" }}]\n",
        plugin_toml("crm-enrich", &["log", "config", "crm"], ""),
        plugin_toml("echo", &[], "") + &plugin_toml("event-echo", &["kv"], ""),
    )
}

#[test]
fn issue_13_version_names_the_wit_package() {
    let out = Command::new(enrichd_bin!())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    assert!(text.contains("enrichd:plugin@0.2.0"), "{text}");
}

#[test]
fn issue_13_check_config_accepts_a_good_config_and_summarises_it() {
    let (out, stdout) = check(&good(), &[("HOOK_SECRET", "from-the-environment")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "listen: 0.0.0.0:8443   admin: 127.0.0.1:8081",
        "trusted_proxies: 10.0.0.0/8",
        "crm-enrich [ok]",
        "needs: config, crm, log; granted: log, config, crm",
        "event-echo [ok]",
        "route /hook: 1 secret(s); allow_ips: 203.0.113.7/32; chain: crm-enrich -> echo",
        "engagelab /el: 1 app key(s); allow_ips: everyone; chain: event-echo",
        "config OK",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
}

#[test]
fn issue_13_check_config_lists_every_problem() {
    let missing = plugin_path("echo").parent().unwrap().join("nope.wasm");
    let missing_pem = missing.with_extension("pem");
    let config = format!(
        "listen = \"127.0.0.1:9999\"\nadmin_listen = \"127.0.0.1:9999\"\n\
         [tls]\ncert = {missing_pem:?}\nkey = {missing_pem:?}\n{}{}{}\
         [[plugin]]\nname = \"missing\"\npath = {missing:?}\n\
         [[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"ungranted\" }}, {{ plugin = \"event-echo\" }}]\n",
        // Imports crm, config and log; granted only log.
        plugin_toml_as("ungranted", "crm-enrich", &["log"], ""),
        plugin_toml_as("pinned", "echo", &[], &format!("sha256 = \"{}\"", "00".repeat(32))),
        plugin_toml("event-echo", &["kv"], ""),
    );
    let (out, stdout) = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for problem in [
        "listen and admin_listen are the same address (127.0.0.1:9999)",
        "plugin \"ungranted\" imports what capability `crm` grants, which it is not granted",
        "plugin \"ungranted\" imports what capability `config` grants",
        "plugin \"pinned\": ",
        "but the config pins 0000",
        "plugin \"missing\": cannot read",
        "route \"/hook\": plugin \"event-echo\" does not export enrichd:plugin/handler",
        "pinned [NOT LOADED]",
        "[tls]: cannot read",
        "7 problem(s)",
    ] {
        assert!(stdout.contains(problem), "{problem:?} not in:\n{stdout}");
    }
}

#[test]
fn issue_13_check_config_refuses_what_does_not_resolve() {
    let cases = [
        (good(), "route \"/hook\": secret 0 reads environment variable \"HOOK_SECRET\", which is not set"),
        (good().replace("203.0.113.7/32", "203.0.113.7/33"), "allow_ips: \"203.0.113.7/33\" is not a CIDR"),
        (good().replace("10.0.0.0/8", "ten"), "trusted_proxies: \"ten\" is not a CIDR"),
        (good().replace("0.0.0.0:8443", "0.0.0.0:http"), "listen = \"0.0.0.0:http\""),
        (good() + "bogus = 1\n", "unknown field `bogus`"),
    ];
    for (i, (config, want)) in cases.into_iter().enumerate() {
        // The first case is the unset secret; the others have it.
        let env: &[(&str, &str)] = if i == 0 { &[] } else { &[("HOOK_SECRET", "s")] };
        let (out, stdout) = check(&config, env);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
}
