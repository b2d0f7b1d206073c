//! EngageLab email callbacks: verified, queued durably, answered at once,
//! and handed to event plugins in the background.
//!
//! EngageLab wants an answer within 3 seconds, and plugins may take longer,
//! so a callback is only checked ([`verify`]: app key, signature, replay
//! window), parsed far enough to know it is one ([`event`]), and queued
//! durably (the storage's [`crate::storage::EventQueue`]) before the 200
//! goes out ([`receive()`], within [`ANSWER_BUDGET`]). A worker ([`work`])
//! on each host then leases the oldest due callback, runs
//! the route's event plugins on it, and acknowledges it only afterwards:
//! delivery to plugins is at least once and survives restarts, crashes and
//! a host dying mid-processing. Identical callbacks (EngageLab retries) are
//! queued once.
//!
//! What a sender can make this path spend is bounded: the replay window is
//! judged against the system clock as it is now; keyed fields are
//! length-capped (400); the queue holds at most `[events] max_queued`
//! callbacks (beyond it 503, so EngageLab keeps the callback and retries). A
//! callback put back for a retry waits for its not-before time without
//! blocking the others, and event calls take permits from a pool of their
//! own: a call that got no permit in time never ran, so its callback is put
//! back without counting an attempt, whatever the plugin's `on_error`.
//!
//! The receiver and the worker share one [`EventState`], built by the
//! composition root: the routes, the queue port, the wake-up, the counters.

pub mod event;
mod receive;
mod state;
pub mod verify;
mod worker;

pub use receive::{receive, ANSWER_BUDGET};
pub use state::{EventRoute, EventState, EventStats, Outcome, RECENT_OUTCOMES};
pub use worker::{wit_event, work, BUSY_RETRY, MAX_RETRY_BACKOFF, RETRY_BACKOFF};
