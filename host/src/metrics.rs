//! Prometheus metrics: one registry per running enrichd ([`Metrics`]),
//! written through the `metrics` facade and rendered as the Prometheus text
//! exposition by `metrics-exporter-prometheus`.
//!
//! The registry is *not* installed as the process-wide recorder: a test
//! process runs several servers, and each must count only its own
//! deliveries. Code that records holds a [`Metrics`] and runs the facade's
//! macros inside [`Metrics::record`] (the facade's local recorder, for the
//! duration of a synchronous closure — recording never awaits). Counters
//! the parts already keep (EngageLab, CRM, breakers, allowlists) are not
//! counted twice: the admin listener copies them into the registry when
//! scraped. A leaf: any layer may use it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Bucket bounds of every `_seconds` histogram, in seconds: from 1 ms (a
/// plugin call that returns at once) to 30 s (the longest delivery budget
/// anyone should configure); 14 buckets keep a series per label set small.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of every `_bytes` histogram (a plugin call's peak
/// memory): powers of 4 from 64 KiB (one wasm page) to 1 GiB, past any
/// sane `max_memory_bytes`.
pub const BYTES_BUCKETS: [f64; 9] = [
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes: samples wait in a buffer until then, so this bounds its memory
/// (at a few hundred deliveries a second, some thousands of samples).
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Call durations kept per plugin for the Admin view's percentiles: the
/// last 1024 calls (8 KiB a plugin), enough for a stable p99 of the
/// recent past without a histogram per page view.
pub const RECENT_CALLS: usize = 1024;

/// One enrichd's metrics registry; cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// By plugin name (bounded by the configs this process has run).
    plugins: Arc<Mutex<HashMap<String, Tally>>>,
}

/// What [`Metrics::plugin_call`] adds up for one plugin.
#[derive(Default)]
struct Tally {
    turns: u64,
    calls: u64,
    failures: BTreeMap<&'static str, u64>,
    recent_us: VecDeque<u64>,
}

/// One plugin's calls since start, for the Admin view.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PluginSummary {
    /// Turns in a chain: calls made, and those refused unmade.
    pub turns: u64,
    /// Calls made (a quarantined or busy plugin is not called).
    pub calls: u64,
    /// Failures by kind (the `kind` label of
    /// `enrichd_plugin_failures_total`), quarantined and busy included.
    pub failures: BTreeMap<&'static str, u64>,
    /// Call durations over the last [`RECENT_CALLS`] calls, µs: p50, p95,
    /// p99 (`None` before the first call).
    pub p50_us: Option<u64>,
    /// See `p50_us`.
    pub p95_us: Option<u64>,
    /// See `p50_us`.
    pub p99_us: Option<u64>,
    /// How many calls the percentiles are over.
    pub window: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// An empty registry, histograms bucketed by [`SECONDS_BUCKETS`] or,
    /// for `_bytes`, [`BYTES_BUCKETS`].
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &BYTES_BUCKETS)
            })
            // Both bounds are non-empty constants: this cannot fail.
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        Metrics {
            recorder: Arc::new(recorder),
            handle,
            plugins: Arc::default(),
        }
    }

    /// Tally a plugin's turn in a chain: `took_us` when it was called,
    /// `failure` (a kind word) when it failed or was not called.
    pub fn plugin_call(&self, plugin: &str, took_us: Option<u64>, failure: Option<&'static str>) {
        let mut plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = match plugins.get_mut(plugin) {
            Some(tally) => tally,
            None => plugins.entry(plugin.to_owned()).or_default(),
        };
        tally.turns += 1;
        if let Some(us) = took_us {
            tally.calls += 1;
            if tally.recent_us.len() == RECENT_CALLS {
                tally.recent_us.pop_front();
            }
            tally.recent_us.push_back(us);
        }
        if let Some(kind) = failure {
            *tally.failures.entry(kind).or_default() += 1;
        }
    }

    /// `plugin`'s tally (all zero if it has not run).
    pub fn plugin_summary(&self, plugin: &str) -> PluginSummary {
        let plugins = self.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tally) = plugins.get(plugin) else {
            return PluginSummary::default();
        };
        let mut sorted: Vec<u64> = tally.recent_us.iter().copied().collect();
        sorted.sort_unstable();
        // Nearest rank: the smallest value with at least q of the calls at
        // or below it.
        let rank = |q: f64| {
            let n = sorted.len();
            (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        PluginSummary {
            turns: tally.turns,
            calls: tally.calls,
            failures: tally.failures.clone(),
            p50_us: rank(0.50),
            p95_us: rank(0.95),
            p99_us: rank(0.99),
            window: sorted.len(),
        }
    }

    /// Run `f` with this registry as the facade's recorder: the
    /// `metrics::counter!`/`gauge!`/`histogram!` calls in it count here.
    pub fn record<R>(&self, f: impl FnOnce() -> R) -> R {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Fold buffered histogram samples into their buckets (see
    /// [`UPKEEP_EVERY`]).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Run [`Metrics::upkeep`] every [`UPKEEP_EVERY`], forever (a job).
    pub async fn upkeep_periodically(self) {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_14_plugin_summary_counts_failures_and_ranks_recent_calls() {
        let m = Metrics::new();
        assert_eq!(m.plugin_summary("p"), PluginSummary::default());
        for us in 1..=100 {
            m.plugin_call("p", Some(us), None);
        }
        m.plugin_call("p", Some(7), Some("trap"));
        m.plugin_call("p", None, Some("quarantined"));
        let s = m.plugin_summary("p");
        assert_eq!((s.turns, s.calls), (102, 101));
        assert_eq!(
            s.failures,
            BTreeMap::from([("quarantined", 1), ("trap", 1)])
        );
        assert_eq!(
            (s.p50_us, s.p95_us, s.p99_us),
            (Some(50), Some(95), Some(99))
        );
        assert_eq!(m.plugin_summary("other").calls, 0);
    }

    #[test]
    fn issue_14_the_recent_window_is_bounded() {
        let m = Metrics::new();
        for _ in 0..RECENT_CALLS {
            m.plugin_call("p", Some(1_000_000), None);
        }
        for _ in 0..RECENT_CALLS {
            m.plugin_call("p", Some(5), None);
        }
        let s = m.plugin_summary("p");
        assert_eq!((s.window, s.p99_us), (RECENT_CALLS, Some(5)));
        assert_eq!(s.calls, 2 * RECENT_CALLS as u64);
    }
}
