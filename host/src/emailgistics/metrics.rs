//! What a delivery adds to the metrics ([`crate::metrics`]): read from its
//! record once it is answered, so the metrics and the delivery log never
//! disagree. Labels are bounded by the config and the code: route path,
//! plugin name, status words, failure kinds, WIT import names, validation
//! field paths — never a delivery id, a mailbox or an address.

use metrics::{counter, histogram};

use super::chain::{Outcome, PluginRecord};
use super::record::DeliveryRecord;
use crate::metrics::Metrics;
use crate::plugin::Failure;

/// Count a delivery the chain answered, and its latency.
pub fn delivered(metrics: &Metrics, record: &DeliveryRecord) {
    metrics.record(|| {
        let route = record.route.clone();
        let status = serde_json::to_value(record.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        counter!("enrichd_deliveries_total",
            "route" => route.clone(),
            "http_status" => record.http_status.to_string(),
            "status" => status)
        .increment(1);
        histogram!("enrichd_delivery_duration_seconds", "route" => route)
            .record(record.elapsed_ms as f64 / 1000.0);
    });
}

/// Count, per plugin of a delivery's chain, its call, failure, duration,
/// fuel, peak memory, host calls and the actions validation dropped.
pub fn plugins(metrics: &Metrics, plugins: &[PluginRecord]) {
    metrics.record(|| plugins.iter().for_each(|p| plugin(metrics, p)));
}

/// Count a copy answered from the stored answer (no plugin ran).
pub fn replayed(metrics: &Metrics, route: &str, http_status: u16) {
    metrics.record(|| {
        counter!("enrichd_delivery_replays_total",
            "route" => route.to_owned(),
            "http_status" => http_status.to_string())
        .increment(1);
    });
}

/// One plugin's turn, into the registry and the Admin view's tally
/// ([`Metrics::plugin_call`]) alike.
fn plugin(metrics: &Metrics, p: &PluginRecord) {
    let name = p.plugin.clone();
    // A quarantined or busy plugin was not called: a failure, not a call.
    if let Some(f @ (Failure::Quarantined(_) | Failure::Busy(_))) = &p.failure {
        let kind = failure_kind(f);
        failed(&name, kind);
        metrics.plugin_call(&name, None, Some(kind));
        return;
    }
    let outcome = match p.outcome {
        Outcome::Skipped => return,
        Outcome::Applied => "applied",
        Outcome::Failed => "failed",
        Outcome::OutOfTime => "out_of_time",
    };
    counter!("enrichd_plugin_calls_total", "plugin" => name.clone(), "outcome" => outcome)
        .increment(1);
    let kind = p.failure.as_ref().map(failure_kind);
    if let Some(kind) = kind {
        failed(&name, kind);
    }
    metrics.plugin_call(&name, Some(p.elapsed_us), kind);
    histogram!("enrichd_plugin_call_duration_seconds", "plugin" => name.clone())
        .record(p.elapsed_us as f64 / 1e6);
    if let Some(usage) = &p.usage {
        if let Some(fuel) = usage.fuel {
            counter!("enrichd_plugin_fuel_consumed_total", "plugin" => name.clone())
                .increment(fuel);
        }
        histogram!("enrichd_plugin_peak_memory_bytes", "plugin" => name.clone())
            .record(usage.peak_memory_bytes as f64);
    }
    for call in p.host_calls.iter().flat_map(|r| &r.calls) {
        counter!("enrichd_plugin_host_calls_total",
            "plugin" => name.clone(), "import" => call.call.clone())
        .increment(1);
    }
    for dropped in &p.dropped {
        counter!("enrichd_actions_dropped_total",
            "plugin" => name.clone(),
            "type" => dropped.action_type,
            "field" => dropped_field(&dropped.reason))
        .increment(1);
    }
}

fn failed(plugin: &str, kind: &'static str) {
    counter!("enrichd_plugin_failures_total", "plugin" => plugin.to_owned(), "kind" => kind)
        .increment(1);
}

/// The `kind` label of a failure: one word per [`Failure`] variant.
pub fn failure_kind(failure: &Failure) -> &'static str {
    match failure {
        Failure::Timeout(_) => "timeout",
        Failure::OutOfTime(_) => "out_of_time",
        Failure::Fuel(_) => "fuel",
        Failure::Memory { .. } => "memory",
        Failure::Trap(_) => "trap",
        Failure::OutputLimit(_) => "output_limit",
        Failure::Guest(_) => "guest_error",
        Failure::Instantiate(_) => "instantiate",
        Failure::Busy(_) => "busy",
        Failure::Quarantined(_) => "quarantined",
    }
}

/// Longest `field` label: validation's paths are short (`sendMessage.inlineAssets.base64Content`).
const MAX_FIELD_LABEL: usize = 64;

/// The field a dropped action's reason names (`tag.tags[3]: empty` →
/// `tag.tags`): the path validation wrote, list positions removed so the
/// label set stays that of the code's paths; `other` for anything else.
pub fn dropped_field(reason: &str) -> String {
    let path = reason.split(": ").next().unwrap_or_default();
    let mut field = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if in_index => {}
            _ => field.push(c),
        }
    }
    let plain = field.chars().all(|c| c.is_ascii_alphabetic() || c == '.');
    if field.is_empty() || field.len() > MAX_FIELD_LABEL || !plain {
        return "other".to_owned();
    }
    field
}

#[cfg(test)]
mod tests {
    use super::dropped_field;

    #[test]
    fn issue_14_dropped_field_labels_are_code_paths() {
        assert_eq!(dropped_field("tag.tags: empty"), "tag.tags");
        assert_eq!(
            dropped_field("assign.x.users[12]: unknown"),
            "assign.x.users"
        );
        assert_eq!(dropped_field("no path here at all"), "other");
        assert_eq!(dropped_field("a@b.example: bad"), "other");
        assert_eq!(dropped_field(&"x".repeat(200)), "other");
    }
}
