//! The per-plugin circuit breaker: a plugin that keeps failing is bypassed
//! for a cool-down instead of costing an instance, a slot and up to its
//! timeout on every delivery and event.
//!
//! States: **closed** (calls run; consecutive failures are counted) →
//! **open** after [`BreakerSettings::failures`] failures in a row (calls are
//! refused at once with [`Failure::Quarantined`]) → **half-open** once the
//! cool-down is over: the next call is the one probe, and calls arriving
//! while it runs are still refused. A probe that succeeds closes the
//! breaker; one that fails opens it for another cool-down.
//!
//! Only the plugin's own failures count (timeout, fuel, memory, trap, output
//! limit, guest error, instantiate). Not counted, and not resetting the
//! count either: [`Failure::OutOfTime`] (the delivery's budget ran out),
//! [`Failure::Busy`] (the host was saturated, the plugin never ran) and
//! [`Failure::Quarantined`] (the breaker's own refusal). A success resets the
//! count. A probe that ends without a verdict (out of time, busy, or its call
//! dropped) leaves the breaker half-open, so the next call probes again.
//!
//! The state is one small mutex, never held across an await, taken once
//! when a call is admitted and once when it is settled; the statistics are
//! atomics. Times are on tokio's clock, so tests can pause it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::policy::BreakerSettings;
use super::Failure;

/// One plugin's circuit breaker, shared by its delivery and event calls.
#[derive(Debug)]
pub struct Breaker {
    plugin: String,
    settings: BreakerSettings,
    state: Mutex<State>,
    opens: AtomicU64,
    bypassed: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Consecutive counted failures.
    failures: u32,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    /// Bypassing until `until`; after it, the next call is the probe.
    Open {
        until: Instant,
    },
    /// The probe call is running.
    Probing,
}

/// What a call's result says about the plugin's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Healthy,
    Failed,
    /// Not the plugin's doing (out of time, busy, quarantined).
    Inconclusive,
}

fn verdict<T>(result: &Result<T, Failure>) -> Verdict {
    match result {
        Ok(_) => Verdict::Healthy,
        Err(Failure::OutOfTime(_) | Failure::Busy(_) | Failure::Quarantined(_)) => {
            Verdict::Inconclusive
        }
        Err(
            Failure::Timeout(_)
            | Failure::Fuel(_)
            | Failure::Memory { .. }
            | Failure::Trap(_)
            | Failure::OutputLimit(_)
            | Failure::Guest(_)
            | Failure::Instantiate(_),
        ) => Verdict::Failed,
    }
}

/// Permission for one call from [`Breaker::admit`]; its result goes back
/// through [`Ticket::settle`].
#[must_use = "a ticket's call result must be settled"]
#[derive(Debug)]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

/// A snapshot of a breaker, for `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStats {
    /// `closed`, `open` or `half-open` (cool-down over: the next call, or
    /// the one running, is the probe).
    pub state: &'static str,
    /// Consecutive failures counted so far.
    pub consecutive_failures: u32,
    /// How many times the breaker opened since start.
    pub opens: u64,
    /// Calls refused as quarantined since start.
    pub bypassed: u64,
    /// Cool-down left while open, ms (0 otherwise).
    pub cooldown_left_ms: u64,
    /// The configured threshold (0: the breaker never opens).
    pub failures_to_open: u32,
    /// The configured cool-down, ms.
    pub cooldown_ms: u64,
}

/// Milliseconds, rounded up so that a breaker still open never says 0.
fn ceil_ms(d: Duration) -> u64 {
    d.as_micros().div_ceil(1000) as u64
}

impl Breaker {
    /// A closed breaker for the plugin named `plugin` (used in its logs).
    pub fn new(plugin: &str, settings: BreakerSettings) -> Self {
        Breaker {
            plugin: plugin.to_owned(),
            settings,
            state: Mutex::new(State {
                failures: 0,
                phase: Phase::Closed,
            }),
            opens: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, valid after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may run now. `Err(Failure::Quarantined(ms))` when the
    /// breaker is open (`ms`: cool-down left) or its probe is running (0).
    pub fn admit(&self) -> Result<Ticket<'_>, Failure> {
        let ticket = |probe| Ticket {
            breaker: self,
            probe,
            settled: false,
        };
        let mut state = self.lock();
        let refused = match state.phase {
            Phase::Closed => return Ok(ticket(false)),
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    ceil_ms(until - now)
                } else {
                    state.phase = Phase::Probing;
                    drop(state);
                    tracing::info!(plugin = %self.plugin, "circuit breaker half-open: probing the plugin with one call");
                    return Ok(ticket(true));
                }
            }
            Phase::Probing => 0,
        };
        drop(state);
        self.bypassed.fetch_add(1, Ordering::Relaxed);
        Err(Failure::Quarantined(refused))
    }

    /// The breaker's state now.
    pub fn stats(&self) -> BreakerStats {
        let state = *self.lock();
        let (name, left) = match state.phase {
            Phase::Closed => ("closed", 0),
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    ("open", ceil_ms(until - now))
                } else {
                    ("half-open", 0)
                }
            }
            Phase::Probing => ("half-open", 0),
        };
        BreakerStats {
            state: name,
            consecutive_failures: state.failures,
            opens: self.opens.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
            cooldown_left_ms: left,
            failures_to_open: self.settings.failures,
            cooldown_ms: ceil_ms(self.settings.cooldown),
        }
    }

    fn open(&self, state: &mut State) {
        state.phase = Phase::Open {
            until: Instant::now() + self.settings.cooldown,
        };
        self.opens.fetch_add(1, Ordering::Relaxed);
    }

    fn settle_verdict(&self, probe: bool, verdict: Verdict) {
        let mut state = self.lock();
        let threshold = self.settings.failures;
        if probe {
            match verdict {
                Verdict::Healthy => {
                    state.failures = 0;
                    state.phase = Phase::Closed;
                    drop(state);
                    tracing::info!(plugin = %self.plugin, "circuit breaker closed: the probe call succeeded");
                }
                Verdict::Failed => {
                    state.failures = state.failures.saturating_add(1);
                    self.open(&mut state);
                    drop(state);
                    tracing::warn!(plugin = %self.plugin, cooldown_ms = ceil_ms(self.settings.cooldown), "circuit breaker open again: the probe call failed");
                }
                // No verdict on the plugin: the next call probes.
                Verdict::Inconclusive => {
                    state.phase = Phase::Open {
                        until: Instant::now(),
                    }
                }
            }
            return;
        }
        // A call admitted before the breaker opened says nothing the probe
        // will not: only calls settled while closed count.
        if state.phase != Phase::Closed {
            return;
        }
        match verdict {
            Verdict::Healthy => state.failures = 0,
            Verdict::Inconclusive => {}
            Verdict::Failed => {
                state.failures = state.failures.saturating_add(1);
                if threshold > 0 && state.failures >= threshold {
                    self.open(&mut state);
                    let failures = state.failures;
                    drop(state);
                    tracing::warn!(plugin = %self.plugin, failures, cooldown_ms = ceil_ms(self.settings.cooldown), "circuit breaker open: the plugin is quarantined after consecutive failures");
                }
            }
        }
    }
}

impl Ticket<'_> {
    /// Record the call's result and hand it back.
    pub fn settle<T>(mut self, result: Result<T, Failure>) -> Result<T, Failure> {
        self.settled = true;
        self.breaker.settle_verdict(self.probe, verdict(&result));
        result
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // A probe whose call was dropped (its caller went away) must not
        // leave the breaker half-open with no probe running, forever.
        if self.probe && !self.settled {
            self.breaker.settle_verdict(true, Verdict::Inconclusive);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_millis(1500);

    fn breaker(failures: u32) -> Breaker {
        Breaker::new(
            "sick",
            BreakerSettings {
                failures,
                cooldown: COOLDOWN,
            },
        )
    }

    fn fail(b: &Breaker) {
        let t = b.admit().expect("admitted");
        assert!(t.settle::<()>(Err(Failure::Guest("sick".into()))).is_err());
    }

    fn succeed(b: &Breaker) {
        b.admit().expect("admitted").settle(Ok(())).unwrap();
    }

    fn quarantined_ms(b: &Breaker) -> u64 {
        match b.admit() {
            Err(Failure::Quarantined(ms)) => ms,
            other => panic!("expected a bypass, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_exactly_n_consecutive_failures() {
        let b = breaker(3);
        fail(&b);
        fail(&b);
        assert_eq!(b.stats().state, "closed");
        assert_eq!(b.stats().consecutive_failures, 2);
        fail(&b);
        let s = b.stats();
        assert_eq!((s.state, s.consecutive_failures, s.opens), ("open", 3, 1));
        assert_eq!(s.cooldown_left_ms, 1500);
    }

    #[tokio::test(start_paused = true)]
    async fn every_plugin_failure_kind_counts() {
        let kinds = [
            Failure::Timeout(1),
            Failure::Fuel(1),
            Failure::Memory {
                limit: 1,
                wanted: 2,
                trap: "t".into(),
            },
            Failure::Trap("t".into()),
            Failure::OutputLimit("o".into()),
            Failure::Guest("g".into()),
            Failure::Instantiate("i".into()),
        ];
        let b = breaker(kinds.len() as u32);
        for f in kinds {
            assert_eq!(b.stats().state, "closed");
            let _ = b.admit().unwrap().settle::<()>(Err(f));
        }
        assert_eq!(b.stats().state, "open");
    }

    #[tokio::test(start_paused = true)]
    async fn bypasses_while_open_with_the_cooldown_left() {
        let b = breaker(1);
        fail(&b);
        assert_eq!(quarantined_ms(&b), 1500);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(quarantined_ms(&b), 500);
        assert_eq!(b.stats().cooldown_left_ms, 500);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(quarantined_ms(&b), 1);
        let s = b.stats();
        assert_eq!((s.bypassed, s.opens, s.state), (3, 1, "open"));
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_the_cooldown_and_concurrent_calls_are_bypassed() {
        let b = breaker(2);
        fail(&b);
        fail(&b);
        tokio::time::advance(COOLDOWN).await;
        assert_eq!(b.stats().state, "half-open");
        let probe = b.admit().expect("the probe is let through");
        assert!(probe.probe);
        // While it runs, everyone else is still bypassed.
        assert_eq!(quarantined_ms(&b), 0);
        assert_eq!(quarantined_ms(&b), 0);
        assert_eq!(b.stats().state, "half-open");
        probe.settle(Ok(())).unwrap();
        assert_eq!(b.stats().bypassed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_success_closes() {
        let b = breaker(2);
        fail(&b);
        fail(&b);
        tokio::time::advance(COOLDOWN).await;
        succeed(&b);
        let s = b.stats();
        assert_eq!((s.state, s.consecutive_failures, s.opens), ("closed", 0, 1));
        // Closed means calls run again, and it takes N new failures to open.
        fail(&b);
        assert_eq!(b.stats().state, "closed");
        fail(&b);
        assert_eq!(b.stats().state, "open");
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_for_another_cooldown() {
        let b = breaker(2);
        fail(&b);
        fail(&b);
        tokio::time::advance(COOLDOWN).await;
        fail(&b);
        let s = b.stats();
        assert_eq!((s.state, s.opens, s.cooldown_left_ms), ("open", 2, 1500));
        assert_eq!(quarantined_ms(&b), 1500);
        tokio::time::advance(COOLDOWN).await;
        succeed(&b);
        assert_eq!(b.stats().state, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_time_busy_and_quarantined_do_not_count_or_reset() {
        let b = breaker(2);
        fail(&b);
        for f in [
            Failure::OutOfTime(5),
            Failure::Busy(5),
            Failure::Quarantined(5),
        ] {
            let _ = b.admit().unwrap().settle::<()>(Err(f));
            assert_eq!(b.stats().consecutive_failures, 1);
            assert_eq!(b.stats().state, "closed");
        }
        fail(&b);
        assert_eq!(b.stats().state, "open");
        // Refused (quarantined) calls while open do not extend the cool-down.
        for _ in 0..10 {
            quarantined_ms(&b);
        }
        let s = b.stats();
        assert_eq!(
            (s.consecutive_failures, s.opens, s.cooldown_left_ms),
            (2, 1, 1500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker(3);
        for _ in 0..5 {
            fail(&b);
            fail(&b);
            succeed(&b);
            assert_eq!(b.stats().consecutive_failures, 0);
        }
        assert_eq!(b.stats().state, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_inconclusive_or_dropped_probe_lets_the_next_call_probe() {
        let b = breaker(1);
        fail(&b);
        tokio::time::advance(COOLDOWN).await;
        let _ = b.admit().unwrap().settle::<()>(Err(Failure::OutOfTime(9)));
        assert_eq!(b.stats().state, "half-open");
        // The probe's future is dropped mid-call.
        drop(b.admit().expect("probes again"));
        let probe = b.admit().expect("probes again after a dropped probe");
        assert!(probe.probe);
        probe.settle(Ok(())).unwrap();
        assert_eq!(b.stats().state, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_admitted_before_it_opened_do_not_decide() {
        let b = breaker(1);
        let late_success = b.admit().unwrap();
        let late_failure = b.admit().unwrap();
        fail(&b);
        late_success.settle(Ok(())).unwrap();
        let _ = late_failure.settle::<()>(Err(Failure::Trap("t".into())));
        let s = b.stats();
        assert_eq!((s.state, s.opens, s.cooldown_left_ms), ("open", 1, 1500));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_failures_disables_it() {
        let b = breaker(0);
        for _ in 0..100 {
            fail(&b);
        }
        let s = b.stats();
        assert_eq!((s.state, s.opens, s.bypassed), ("closed", 0, 0));
        assert_eq!(s.consecutive_failures, 100);
    }
}
