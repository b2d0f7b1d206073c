//! Fuzzes config parsing and validation: `toml` into `RawConfig`, then
//! `resolve`. Neither panics, and an accepted config is consistent.
#![no_main]

use std::path::Path;

use enrichd::config::RawConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = toml::from_str::<RawConfig>(text) else {
        return;
    };
    let env = |name: &str| match name {
        "SET" => Some("a-secret-value".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let Ok(config) = raw.resolve(Path::new("/etc/enrichd"), &env) else {
        return;
    };
    assert!(!config.routes.is_empty() || !config.event_routes.is_empty());
    assert!(config.data_dir.is_absolute() && config.cache_dir.is_absolute());
    for p in &config.plugins {
        assert!(p.path.is_absolute() && !p.timeout.is_zero());
        assert!(p.crm_sources.iter().all(|&i| i < config.crm.len()));
    }
    for r in &config.routes {
        assert!(r.path.starts_with('/'));
        assert!(r.chain.iter().all(|e| e.plugin < config.plugins.len()));
    }
    for r in &config.event_routes {
        assert!(r.path.starts_with('/') && !r.app_keys.is_empty());
        assert!(r.chain.iter().all(|&i| i < config.plugins.len()));
    }
});
