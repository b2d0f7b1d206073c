//! Issue 13, install: `scripts/install --dest-dir` stages the binary, the
//! unit, the config skeleton (with a generated secret) and the first-party
//! plugins; `check-config` accepts the skeleton; a second install keeps
//! the config; the unit passes `systemd-analyze verify` where systemd is.

use std::path::{Path, PathBuf};
use std::process::Command;

use enrichd_tests::enrichd_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run `scripts/install` with `args` (and the test binary), which must succeed.
fn install(args: &[&str]) {
    let mut cmd = Command::new(repo().join("scripts/install"));
    cmd.args(args).arg("--binary").arg(enrichd_bin!());
    // What the outer cargo sets must not reach the nested plugin build.
    for key in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(key);
    }
    let out = cmd.output().expect("run scripts/install");
    assert!(
        out.status.success(),
        "scripts/install {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn issue_13_install_stages_the_layout_and_check_config_accepts_it() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    install(&["--dest-dir", d.to_str().unwrap()]);

    assert_eq!(mode(&d.join("usr/local/bin/enrichd")), 0o755);
    for p in [
        "crm_enrich",
        "keyword_router",
        "engagement_tracker",
        "engagement_enrich",
    ] {
        let wasm = d.join(format!("usr/local/lib/enrichd/plugins/{p}.wasm"));
        assert!(
            std::fs::read(&wasm).unwrap().starts_with(b"\0asm"),
            "{}",
            wasm.display()
        );
    }
    assert_eq!(
        mode(&d.join("etc/enrichd/enrichd.toml")),
        0o640,
        "it holds the secret"
    );
    assert_eq!(mode(&d.join("etc/enrichd/enrichd.env")), 0o640);
    assert_eq!(mode(&d.join("var/lib/enrichd")), 0o750);
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/enrichd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/enrichd serve --config /etc/enrichd/enrichd.toml"),
        "{unit}"
    );
    assert!(
        unit.contains("ExecStartPre=/usr/local/bin/enrichd check-config"),
        "{unit}"
    );

    // A fresh secret, in place of the placeholder.
    let config = std::fs::read_to_string(d.join("etc/enrichd/enrichd.toml")).unwrap();
    assert!(!config.contains("@GENERATED_SECRET@"), "{config}");
    let secret = config
        .lines()
        .find_map(|l| l.strip_prefix("secrets = [{ value = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("a secrets line");
    assert!(
        secret.len() >= 40 && secret.chars().all(|c| c.is_ascii_alphanumeric()),
        "{secret}"
    );

    // The files name their final paths; re-rooted into the staging
    // directory, the installed binary accepts the installed config.
    let staged = d.to_str().unwrap();
    let rerooted = config
        .replace("/usr/local", &format!("{staged}/usr/local"))
        .replace("/var/lib/enrichd", &format!("{staged}/var/lib/enrichd"));
    let check = d.join("check.toml");
    std::fs::write(&check, rerooted).unwrap();
    let out = Command::new(d.join("usr/local/bin/enrichd"))
        .args(["check-config", "--config"])
        .arg(&check)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(
        !stdout.contains("warning"),
        "the skeleton grants what its plugins import:\n{stdout}"
    );

    // Again, over an edited config: the config and its secret are kept.
    let edited = format!("{config}\n# edited by the operator\n");
    std::fs::write(d.join("etc/enrichd/enrichd.toml"), &edited).unwrap();
    install(&["--dest-dir", staged]);
    assert_eq!(
        std::fs::read_to_string(d.join("etc/enrichd/enrichd.toml")).unwrap(),
        edited
    );

    // Another prefix is named in the unit and the config.
    let other = tempfile::tempdir().unwrap();
    install(&[
        "--dest-dir",
        other.path().to_str().unwrap(),
        "--prefix",
        "/opt/enrichd",
    ]);
    let unit =
        std::fs::read_to_string(other.path().join("etc/systemd/system/enrichd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/enrichd/bin/enrichd serve"),
        "{unit}"
    );
    let config = std::fs::read_to_string(other.path().join("etc/enrichd/enrichd.toml")).unwrap();
    assert!(config.contains("path = \"/opt/enrichd/lib/enrichd/plugins/crm_enrich.wasm\""));
    assert!(other.path().join("opt/enrichd/bin/enrichd").is_file());
}

#[test]
fn issue_13_systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string(repo().join("deploy/enrichd.service")).unwrap();
    for line in [
        "User=enrichd",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/enrichd",
        "NoNewPrivileges=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=",
        "ExecStartPre=/usr/local/bin/enrichd check-config",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "{line:?} missing"
        );
    }
    // wasmtime maps compiled code executable.
    assert!(!unit
        .lines()
        .any(|l| l.starts_with("MemoryDenyWriteExecute")));

    let Ok(analyze) = which("systemd-analyze") else {
        println!("skipped systemd-analyze verify: systemd-analyze is not on PATH");
        return;
    };
    // verify checks that the commands exist: point them at the test binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("enrichd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/enrichd", enrichd_bin!().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("enrichd.service"), "{stderr}");
}

/// `name` on PATH.
fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
