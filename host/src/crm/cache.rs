//! A CRM source: a backend with a cache in front and fallbacks behind.
//!
//! A lookup runs: fresh cache → backend (bounded by min(backend timeout,
//! what is left of the caller's deadline)) → last-known value → domain-level
//! match → nothing.
//!
//! - *Fresh*: moka holds answers, found or not found, for `ttl` or
//!   `negative_ttl`. Freshness is judged on the [`Clock`] (tokio's clock),
//!   so it is testable with paused time; moka's own expiry only reclaims
//!   memory.
//! - *Backend*: concurrent misses of one key make one backend call
//!   ([`SingleFlight`]). The call runs in its own task: when the caller's
//!   deadline ends first, the call still completes and fills the caches, so
//!   a slow backend pays off for the next delivery.
//! - *Last known*: every successful lookup is kept in storage with its time;
//!   served (as *stale*, with its age) when the backend fails or is too slow.
//!   Not served after a definite "not found": that customer is gone.
//! - *Domain*: the same chain for the address's domain, as a cheaper signal.
//!
//! Optionally, recently used keys are refreshed on a schedule so the
//! request path rarely waits on the backend. Counters are kept per source.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

// Every deadline is on tokio's clock, so timers and deadlines agree (also
// under tokio's test clock).
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::{domain_of, normalize_email, Backend, BackendError, Record};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::singleflight::{self, Claim, SingleFlight};
use crate::storage::CrmLastKnown;

/// Cache settings of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a found record is fresh.
    pub ttl: Duration,
    /// How long a "not found" is believed.
    pub negative_ttl: Duration,
    /// Most entries in memory.
    pub max_capacity: u64,
    /// Backend timeout per call.
    pub backend_timeout: Duration,
    /// Refresh recently used keys this often; `None`: no scheduled refresh.
    pub refresh_every: Option<Duration>,
}

/// Default freshness: CRM records (claim and policy numbers, region, tier)
/// change rarely; five minutes keeps a busy mailbox off the backend.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default for "not found": short, so a customer created a minute ago is
/// found soon, long enough to absorb a burst from an unknown sender.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Default entries in memory: 100 000 records of a few hundred bytes each
/// is a few tens of MiB.
pub const DEFAULT_MAX_CAPACITY: u64 = 100_000;

/// Most keys remembered for the scheduled refresh (`refresh_every_secs`).
/// Each refresh period costs up to one backend call per remembered key, so
/// this bounds both the memory (10 000 keys of ≤ 322 bytes: a few MiB) and
/// the refresh load on the CRM; a busy mailbox has far fewer distinct
/// correspondents per period. Keys beyond it are served as usual, just not
/// refreshed ahead of time.
pub const MAX_RECENT_KEYS: usize = 10_000;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provenance {
    /// The backend's answer, now or within the freshness window.
    Fresh,
    /// The last value the backend gave; it could not answer in time now.
    Stale,
    /// No record for the address; a match on its domain.
    Domain,
}

/// A lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The record.
    pub fields: Record,
    /// Where it came from.
    pub provenance: Provenance,
    /// How old the data is, in milliseconds.
    pub age_ms: u64,
    /// The source's name.
    pub source: String,
}

/// Counters of one source, for logs and the stats endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answered from the fresh cache.
    pub hits: AtomicU64,
    /// Not in the fresh cache.
    pub misses: AtomicU64,
    /// Calls made to the backend.
    pub backend_calls: AtomicU64,
    /// Backend calls that failed or timed out.
    pub backend_errors: AtomicU64,
    /// Sum of backend call latencies, µs (with `backend_calls`: the mean).
    pub backend_latency_us: AtomicU64,
    /// Answers served from the last-known store.
    pub stale_served: AtomicU64,
    /// Answers served from a domain match.
    pub domain_fallbacks: AtomicU64,
    /// Keys refreshed on schedule.
    pub refreshed: AtomicU64,
}

impl Stats {
    /// A JSON snapshot.
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let calls = get(&self.backend_calls);
        serde_json::json!({
            "hits": get(&self.hits),
            "misses": get(&self.misses),
            "backendCalls": calls,
            "backendErrors": get(&self.backend_errors),
            "backendMeanLatencyUs": get(&self.backend_latency_us).checked_div(calls).unwrap_or(0),
            "staleServed": get(&self.stale_served),
            "domainFallbacks": get(&self.domain_fallbacks),
            "refreshed": get(&self.refreshed),
        })
    }
}

/// What is cached per key: a record with its time, or a "not found".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cached {
    record: Option<Record>,
    at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Email(String),
    Domain(String),
}

impl Key {
    fn store_key(&self) -> String {
        match self {
            Key::Email(e) => format!("e:{e}"),
            Key::Domain(d) => format!("d:{d}"),
        }
    }
}

type Fetched = Result<Cached, BackendError>;

/// A CRM source: backend, caches, fallbacks and counters.
pub struct CrmSource {
    name: String,
    backend: Arc<Backend>,
    settings: CacheSettings,
    fresh: moka::future::Cache<Key, Cached>,
    last_known: Arc<dyn CrmLastKnown>,
    flights: Arc<SingleFlight<Key, Fetched>>,
    recent: Mutex<HashMap<Key, u64>>,
    clock: Clock,
    stats: Arc<Stats>,
    /// Where backend call durations go (`/metrics`
    /// `enrichd_crm_backend_duration_seconds`).
    metrics: Metrics,
}

impl CrmSource {
    /// A source named `name` over `backend`, keeping last-known values in
    /// `last_known` (under the source's name).
    pub fn new(
        name: &str,
        backend: Backend,
        settings: CacheSettings,
        last_known: Arc<dyn CrmLastKnown>,
        clock: Clock,
    ) -> Self {
        // moka's expiry only reclaims memory; freshness is decided by the
        // clock, so entries may outlive their TTL here by a margin.
        let reclaim_after = settings.ttl.max(settings.negative_ttl) * 2;
        CrmSource {
            name: name.to_owned(),
            backend: Arc::new(backend),
            settings,
            fresh: moka::future::Cache::builder()
                .max_capacity(settings.max_capacity)
                .time_to_live(reclaim_after)
                .build(),
            last_known,
            flights: Arc::default(),
            recent: Mutex::default(),
            clock,
            stats: Arc::default(),
            // A registry of its own until the server's is given: a source
            // in a test or a bench records where nobody reads.
            metrics: Metrics::new(),
        }
    }

    /// This source with its backend call durations recorded in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The source's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Look a customer up by email, falling back as the module docs say.
    /// Everything, backend calls included, is over by `deadline`.
    pub async fn lookup_email(&self, email: &str, deadline: Instant) -> Option<Answer> {
        let email = normalize_email(email);
        if let Some(answer) = self.chain(Key::Email(email.clone()), deadline).await {
            return Some(answer);
        }
        let domain = domain_of(&email).filter(|d| d.len() <= super::MAX_DOMAIN_BYTES)?;
        let answer = self.chain(Key::Domain(domain), deadline).await?;
        self.stats.domain_fallbacks.fetch_add(1, Ordering::Relaxed);
        Some(Answer {
            provenance: Provenance::Domain,
            ..answer
        })
    }

    /// Look a domain up (fresh or stale, no further fallback).
    pub async fn lookup_domain(&self, domain: &str, deadline: Instant) -> Option<Answer> {
        let domain = domain.trim().trim_end_matches('.').to_lowercase();
        self.chain(Key::Domain(domain), deadline).await
    }

    /// Fresh cache → backend → last known, for one key.
    async fn chain(&self, key: Key, deadline: Instant) -> Option<Answer> {
        self.note_use(&key);
        let now = self.clock.now_ms();
        if let Some(cached) = self.fresh.get(&key).await {
            if self.is_fresh(&cached, now) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return self.answer(cached, Provenance::Fresh);
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        match self.fetch(key.clone(), deadline).await {
            Ok(cached) => self.answer(cached, Provenance::Fresh),
            Err(e) => {
                tracing::debug!(source = %self.name, key = ?key, error = %e, "CRM backend failed; trying the last-known value");
                let known = self.read_last_known(&key).await?;
                self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                self.answer(known, Provenance::Stale)
            }
        }
    }

    fn answer(&self, cached: Cached, provenance: Provenance) -> Option<Answer> {
        let age_ms = self.clock.now_ms().saturating_sub(cached.at_ms);
        cached.record.map(|fields| Answer {
            fields,
            provenance,
            age_ms,
            source: self.name.clone(),
        })
    }

    fn is_fresh(&self, cached: &Cached, now: u64) -> bool {
        let ttl = if cached.record.is_some() {
            self.settings.ttl
        } else {
            self.settings.negative_ttl
        };
        now.saturating_sub(cached.at_ms) < ttl.as_millis() as u64
    }

    /// One backend call per key at a time; the caller waits at most until
    /// min(backend timeout, deadline), the call itself runs to its end.
    async fn fetch(&self, key: Key, deadline: Instant) -> Fetched {
        let wait_until = deadline.min(Instant::now() + self.settings.backend_timeout);
        let slot = match self.flights.claim(key.clone()) {
            Claim::Follower(slot) => slot,
            Claim::Leader(leader) => {
                let slot = leader.slot();
                let call = self.backend_call(key);
                // In the caller's span: the call's lines are about the
                // delivery that asked (it runs on even if that one stops
                // waiting).
                tokio::spawn(tracing::Instrument::in_current_span(async move {
                    leader.finish(call.await)
                }));
                slot
            }
        };
        match tokio::time::timeout_at(wait_until, singleflight::follow(slot)).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(BackendError::Unavailable("the lookup was abandoned".into())),
            Err(_) => Err(BackendError::Timeout(
                wait_until
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
            )),
        }
    }

    /// The backend call as a `'static` future that also fills the caches.
    fn backend_call(
        &self,
        key: Key,
    ) -> impl std::future::Future<Output = Fetched> + Send + 'static {
        let (backend, stats, fresh, last_known, clock, name, timeout, registry) = (
            self.backend.clone(),
            self.stats.clone(),
            self.fresh.clone(),
            self.last_known.clone(),
            self.clock,
            self.name.clone(),
            self.settings.backend_timeout,
            self.metrics.clone(),
        );
        async move {
            stats.backend_calls.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let call = async {
                match &key {
                    Key::Email(e) => backend.by_email(e).await,
                    Key::Domain(d) => backend.by_domain(d).await,
                }
            };
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(BackendError::Timeout(timeout.as_millis() as u64)),
            };
            let took = started.elapsed();
            stats
                .backend_latency_us
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
            registry.record(|| {
                metrics::histogram!("enrichd_crm_backend_duration_seconds", "source" => name.clone())
                    .record(took.as_secs_f64());
            });
            match result {
                Ok(record) => {
                    let cached = Cached {
                        record,
                        at_ms: clock.now_ms(),
                    };
                    if cached.record.is_some() {
                        write_last_known(&*last_known, &key, &cached, &name).await;
                    }
                    fresh.insert(key, cached.clone()).await;
                    Ok(cached)
                }
                Err(e) => {
                    stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %name, error = %e, "CRM backend call failed");
                    Err(e)
                }
            }
        }
    }

    async fn read_last_known(&self, key: &Key) -> Option<Cached> {
        let bytes = match self.last_known.get(&self.name, &key.store_key()).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot read the last-known CRM store");
                return None;
            }
        };
        serde_json::from_slice(&bytes).ok()
    }

    /// Remember `key` for the scheduled refresh, within [`MAX_RECENT_KEYS`]:
    /// when the set is full, keys not used within the last period are
    /// forgotten first; if it is still full, `key` is not remembered.
    fn note_use(&self, key: &Key) {
        let Some(every) = self.settings.refresh_every else {
            return;
        };
        let now = self.clock.now_ms();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() >= MAX_RECENT_KEYS && !recent.contains_key(key) {
            let window = every.as_millis() as u64;
            recent.retain(|_, used| now.saturating_sub(*used) <= window);
            if recent.len() >= MAX_RECENT_KEYS {
                return;
            }
        }
        recent.insert(key.clone(), now);
    }

    /// Refresh the keys used within the last refresh period whose cached
    /// answer will not stay fresh until the next one. Returns how many
    /// refreshes were started. (Run on schedule by [`Self::refresh_periodically`].)
    pub async fn refresh_recent(&self) -> usize {
        let Some(every) = self.settings.refresh_every else {
            return 0;
        };
        let now = self.clock.now_ms();
        let window = every.as_millis() as u64;
        let due: Vec<Key> = {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.retain(|_, used| now.saturating_sub(*used) <= window);
            recent.keys().cloned().collect()
        };
        let mut started = 0;
        for key in due {
            let expires_soon = match self.fresh.get(&key).await {
                Some(cached) => {
                    let ttl = if cached.record.is_some() {
                        self.settings.ttl
                    } else {
                        self.settings.negative_ttl
                    };
                    cached.at_ms + (ttl.as_millis() as u64) <= now + window
                }
                None => true,
            };
            if expires_soon {
                if let Claim::Leader(leader) = self.flights.claim(key.clone()) {
                    let call = self.backend_call(key);
                    tokio::spawn(async move { leader.finish(call.await) });
                    self.stats.refreshed.fetch_add(1, Ordering::Relaxed);
                    started += 1;
                }
            }
        }
        started
    }

    /// Whether this source refreshes recently used keys on a schedule.
    pub fn refreshes(&self) -> bool {
        self.settings.refresh_every.is_some()
    }

    /// Refresh recently used keys every `refresh_every`, until dropped.
    pub async fn refresh_periodically(self: Arc<Self>) {
        let Some(every) = self.settings.refresh_every else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = self.refresh_recent().await;
            if n > 0 {
                tracing::debug!(source = %self.name, keys = n, "CRM keys refreshed");
            }
        }
    }
}

async fn write_last_known(store: &dyn CrmLastKnown, key: &Key, cached: &Cached, source: &str) {
    let written = match serde_json::to_vec(cached) {
        Ok(bytes) => store
            .put(source, &key.store_key(), &bytes)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        tracing::warn!(%source, error = %e, "cannot keep the last-known CRM value");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::embedded::EmbeddedCrm;

    fn new_source(refresh_every: Option<Duration>) -> (tempfile::TempDir, CrmSource) {
        let (dir, storage) = crate::storage::sled::test_util::temp_storage();
        let db = crate::storage::crm_records::CrmDb::temporary().unwrap();
        let backend = Backend::Embedded(EmbeddedCrm::open(&db, "main").unwrap());
        let settings = CacheSettings {
            ttl: DEFAULT_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            max_capacity: DEFAULT_MAX_CAPACITY,
            backend_timeout: Duration::from_secs(2),
            refresh_every,
        };
        let source = CrmSource::new("main", backend, settings, storage.crm, Clock::new());
        (dir, source)
    }

    fn recent_len(source: &CrmSource) -> usize {
        source.recent.lock().unwrap().len()
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresh_set_stays_bounded_and_forgets_old_keys_first() {
        let (_dir, source) = new_source(Some(Duration::from_secs(60)));
        let over = MAX_RECENT_KEYS + 500;
        for i in 0..over {
            source.note_use(&Key::Email(format!("u{i}@d{i}.example")));
        }
        assert_eq!(recent_len(&source), MAX_RECENT_KEYS);
        // A key already remembered is still renewed when the set is full.
        source.note_use(&Key::Email("u0@d0.example".into()));
        assert_eq!(recent_len(&source), MAX_RECENT_KEYS);

        // Once the remembered keys are older than a period, new keys push
        // them out instead of being refused.
        tokio::time::advance(Duration::from_secs(61)).await;
        source.note_use(&Key::Domain("fresh.example".into()));
        assert_eq!(recent_len(&source), 1);
        assert!(source
            .recent
            .lock()
            .unwrap()
            .contains_key(&Key::Domain("fresh.example".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_through_the_chain_fill_the_refresh_set_only_up_to_the_bound() {
        let (_dir, source) = new_source(Some(Duration::from_secs(60)));
        let deadline = Instant::now() + Duration::from_secs(1);
        for i in 0..(MAX_RECENT_KEYS / 2 + 100) {
            // Each unknown address is tried, then its domain: two keys.
            assert_eq!(
                source
                    .lookup_email(&format!("u{i}@d{i}.example"), deadline)
                    .await,
                None
            );
        }
        assert_eq!(recent_len(&source), MAX_RECENT_KEYS);
        // Without a refresh schedule nothing is remembered at all.
        let (_dir2, plain) = new_source(None);
        plain
            .lookup_email("a@b.example", Instant::now() + Duration::from_secs(1))
            .await;
        assert_eq!(recent_len(&plain), 0);
    }

    #[tokio::test]
    async fn an_overlong_domain_is_not_looked_up() {
        let (_dir, source) = new_source(None);
        let long = format!("a@{}.example", "d".repeat(crate::crm::MAX_DOMAIN_BYTES));
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(source.lookup_email(&long, deadline).await, None);
        // The address was tried; its domain (over 253 bytes) was not.
        assert_eq!(source.stats().backend_calls.load(Ordering::Relaxed), 1);
        assert_eq!(
            source.stats().misses.load(Ordering::Relaxed),
            1,
            "no domain chain ran"
        );
    }
}
