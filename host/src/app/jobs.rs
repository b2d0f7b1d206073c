//! The background jobs of a running enrichd, all under one
//! [`Supervisor`]: the storage sweep, the EngageLab event worker, one
//! refresh per CRM source, and the CRM counters log line.

use std::sync::Arc;
use std::time::Duration;

use super::supervisor::Supervisor;
use crate::crm::cache::CrmSource;
use crate::engagelab::EventState;
use crate::storage::Storage;

/// How often expired answers are removed and the store's size reported.
/// Expired answers are already invisible to lookups; sweeping only
/// reclaims space, so once a minute is plenty.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How often the CRM counters are looked at, and logged if they moved: a
/// minute is fine-grained enough for a log and quiet on an idle day.
pub const CRM_LOG_EVERY: Duration = Duration::from_secs(60);

/// Time the background jobs get to stop once the listeners have drained.
/// They are dropped at their next await, so this only bounds a job stuck
/// in blocking work; a few seconds keep a shutdown prompt.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Start every background job; the caller shuts the supervisor down.
pub fn start(storage: &Storage, events: &Arc<EventState>, crm: &[Arc<CrmSource>]) -> Supervisor {
    let jobs = Supervisor::new();
    let swept = storage.clone();
    jobs.spawn("storage sweep", move || sweep_periodically(swept.clone()));
    let worker = events.clone();
    jobs.spawn("EngageLab event worker", move || {
        crate::engagelab::work(worker.clone())
    });
    // A source without `refresh_every_secs` has no refresh job (one would
    // end at once and be logged as ended).
    for source in crm.iter().filter(|s| s.refreshes()) {
        let source = source.clone();
        jobs.spawn(format!("CRM refresh of {}", source.name()), move || {
            source.clone().refresh_periodically()
        });
    }
    if !crm.is_empty() {
        let sources = crm.to_vec();
        jobs.spawn("CRM counters log", move || {
            log_crm_counters(sources.clone())
        });
    }
    jobs
}

/// Sweep the storage every [`SWEEP_EVERY`], logging what it removed.
async fn sweep_periodically(storage: Storage) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match storage.sweep().await {
            Ok(report) => {
                let bytes = storage.maintenance.bytes_on_disk().await.unwrap_or(0);
                if report.expired + report.evicted + report.seen_forgotten + report.crm_expired > 0
                {
                    tracing::info!(
                        expired = report.expired,
                        evicted = report.evicted,
                        stored = report.remaining,
                        seen_forgotten = report.seen_forgotten,
                        crm_expired = report.crm_expired,
                        bytes_on_disk = bytes,
                        "storage swept"
                    );
                } else {
                    tracing::debug!(
                        stored = report.remaining,
                        bytes_on_disk = bytes,
                        "storage swept"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "storage sweep failed"),
        }
    }
}

/// Log the CRM counters every [`CRM_LOG_EVERY`] when they moved, not
/// every minute of an idle day.
async fn log_crm_counters(sources: Vec<Arc<CrmSource>>) {
    let mut every = tokio::time::interval(CRM_LOG_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged = crate::crm::stats(&sources);
    loop {
        every.tick().await;
        let now = crate::crm::stats(&sources);
        if now != logged {
            tracing::info!(crm = %now, "CRM counters");
            logged = now;
        }
    }
}
