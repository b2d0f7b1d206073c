//! One answer per delivery, however many copies arrive and wherever.
//!
//! Emailgistics retries on 5xx and connection errors, on any host, so copies
//! of one delivery can arrive while the first is still running. The
//! protocol ([`answer_once`]):
//!
//! 1. Copies on this host go through a local single flight first
//!    ([`crate::singleflight`]): one of them goes on, the others wait in
//!    memory for its answer.
//! 2. That one claims the key in the [`AnswerStore`] with a lease of about
//!    the delivery budget. An answer already stored is replayed. A key held
//!    by another copy (on another host) is polled with a short backoff,
//!    bounded by the budget, and claimed again if that lease ends
//!    unanswered.
//! 3. The leader runs the plugins, then completes the key with its answer
//!    (fenced by its lease). A 5xx answer is never stored (it asks for a
//!    retry, which must run again): the key is released instead.
//!
//! A store that cannot be read or written answers 503: the sender retries,
//! rather than the plugins running twice for one delivery.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::singleflight::{self, Claim, SingleFlight};
use crate::storage::{
    AnswerStore, Claimed, Completed, DeliveryKey, LeaseToken, StorageError, StoredDelivery,
};

/// What a lease outlasts the delivery budget by: the leader stores its
/// answer just after the budget at worst (the chain ends by the budget,
/// storing takes an fsync or a Redis round trip), and a lease ending before
/// that would let a copy run the plugins again. Five seconds covers a slow
/// disk; a dead leader's key runs again this much later.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// First pause while another host holds the key: short, since the holder
/// may be about to answer.
pub const POLL_FIRST: Duration = Duration::from_millis(20);
/// Longest pause between polls: a waiting copy learns of the answer within
/// a quarter second, at four reads per second per waiting copy.
pub const POLL_MAX: Duration = Duration::from_millis(250);

/// An answer as sent: status and exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response body (JSON).
    pub body: Bytes,
    /// When it was first answered (unix ms).
    pub answered_at_ms: u64,
}

impl Answer {
    /// The answer a stored delivery replays.
    pub fn of(stored: StoredDelivery) -> Self {
        Answer {
            status: stored.status,
            body: Bytes::from(stored.body),
            answered_at_ms: stored.stored_at_ms,
        }
    }
}

/// What the leader's run produced: the answer, and the delivery record
/// stored with it.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The answer to send.
    pub answer: Answer,
    /// The bounded delivery record.
    pub record: serde_json::Value,
}

/// Copies of deliveries in flight on this host: the first copy of a key
/// goes on, later ones wait for its answer.
pub type Inflight = SingleFlight<DeliveryKey, Arc<Answer>>;

/// Why a copy got no answer to send (each is answered 503).
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    /// The store could not be read or written.
    #[error("delivery store unavailable: {0}")]
    Store(#[from] StorageError),
    /// Another copy still holds the key at the end of the budget.
    #[error("an earlier copy of this delivery is still being processed")]
    StillRunning,
    /// This copy's lease ended and another copy took the key: its answer
    /// must not be sent (the sender's retry gets the other one's).
    #[error("this copy's lease ended before it answered; retry")]
    LeaseLost,
}

/// The answer for `key`, and whether it is replayed (no plugin ran for this
/// copy): see the module docs. `run` is called at most once, by the leader.
pub async fn answer_once<F, Fut>(
    answers: &Arc<dyn AnswerStore>,
    inflight: &Arc<Inflight>,
    key: &DeliveryKey,
    lease: Duration,
    budget_end: Instant,
    run: F,
) -> Result<(Arc<Answer>, bool), Unanswered>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Ran>,
{
    let mut run = Some(run);
    // Each turn either answers or finds that the local copy it followed
    // went away without an answer; then it tries again (and usually leads).
    loop {
        match inflight.claim(key.clone()) {
            Claim::Follower(slot) => {
                match tokio::time::timeout_at(budget_end, singleflight::follow(slot)).await {
                    Ok(Some(answer)) => return Ok((answer, true)),
                    Ok(None) => continue,
                    Err(_) => return Err(Unanswered::StillRunning),
                }
            }
            Claim::Leader(local) => {
                let run = run.take().expect("a local leader runs once");
                let (answer, replayed) = lead(answers, key, lease, budget_end, run).await?;
                let answer = Arc::new(answer);
                local.finish(answer.clone());
                return Ok((answer, replayed));
            }
        }
    }
}

/// Claim across hosts, wait for a holder, or run and complete.
async fn lead<F, Fut>(
    answers: &Arc<dyn AnswerStore>,
    key: &DeliveryKey,
    lease: Duration,
    budget_end: Instant,
    run: F,
) -> Result<(Answer, bool), Unanswered>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Ran>,
{
    let mut pause = POLL_FIRST;
    let token = loop {
        match answers.claim(key, lease).await? {
            Claimed::Answered(stored) => return Ok((Answer::of(stored), true)),
            Claimed::Leader(token) => break token,
            Claimed::Held => {
                if Instant::now() + pause >= budget_end {
                    return Err(Unanswered::StillRunning);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
    };
    // A leader that goes away mid-run (its connection dropped) lets go of
    // the key, so a waiting copy leads at once instead of waiting the lease
    // out.
    let mut guard = Releaser {
        answers: answers.clone(),
        token: Some(token),
    };
    let ran = run().await;
    let token = guard.token.take().expect("taken once");
    if ran.answer.status >= 500 {
        // A retry must run again: nothing stored.
        if let Err(e) = answers.release(&token).await {
            tracing::warn!(route = %key.route, delivery = %key.id, error = %e, "cannot release a delivery's lease; it ends by itself");
        }
        return Ok((ran.answer, false));
    }
    let stored = StoredDelivery {
        route: key.route.clone(),
        id: key.id.clone(),
        stored_at_ms: ran.answer.answered_at_ms,
        status: ran.answer.status,
        body: String::from_utf8_lossy(&ran.answer.body).into_owned(),
        record: ran.record,
    };
    match answers.complete(&token, &stored).await {
        Ok(Completed::Stored) => Ok((ran.answer, false)),
        Ok(Completed::Superseded(other)) => Ok((Answer::of(other), true)),
        Ok(Completed::LeaseLost) => Err(Unanswered::LeaseLost),
        Err(e) => {
            // Unstored, a retry would run the plugins again without this
            // answer to replay: ask for the retry now, before anything
            // applies, and let the next copy lead.
            let _ = answers.release(&token).await;
            Err(Unanswered::Store(e))
        }
    }
}

/// Releases a lease whose leader was dropped before it finished.
struct Releaser {
    answers: Arc<dyn AnswerStore>,
    token: Option<LeaseToken>,
}

impl Drop for Releaser {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let answers = self.answers.clone();
        // Without a runtime (shutting down) the lease simply ends by itself.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = answers.release(&token).await;
            });
        }
    }
}

#[cfg(test)]
mod tests;
