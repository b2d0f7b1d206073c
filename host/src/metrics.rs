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

use std::sync::Arc;

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

/// One enrichd's metrics registry; cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
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
