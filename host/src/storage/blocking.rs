//! Whether the current thread may block: a backend whose calls block (sled)
//! does its work in place on such a thread instead of a trip to tokio's
//! blocking pool.
//!
//! Callers above storage that already run off the async workers (a plugin
//! call, inside `block_in_place`) say so with [`may_block`]; storage knows
//! nothing of who they are.

use std::cell::Cell;

thread_local! {
    /// Whether this thread is off the async workers, so storage work may
    /// block it: set by [`may_block`] for as long as its closure runs.
    static OFF_THE_WORKERS: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`, which its caller runs on a thread off tokio's async workers
/// (inside `block_in_place`), with the blocking storage work it awaits done
/// right here instead of on the blocking pool: the thread may block
/// already, and a trip to the pool would only add two thread hand-offs and
/// a queue (under load, most of a plugin's kv read). The caller must not
/// run it on an async worker, nor on a current-thread runtime. A timeout
/// around `f` fires between polls, so a storage call that stalls delays it
/// by that call (a read or write of a hot sled tree takes microseconds; on
/// the pool the stall would hold a pool thread instead).
pub fn may_block<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the flag even if `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OFF_THE_WORKERS.with(|off| off.set(self.0));
        }
    }
    let _restore = Restore(OFF_THE_WORKERS.with(|off| off.replace(true)));
    f()
}

/// Whether this thread runs inside [`may_block`]: off the async workers,
/// free to block.
pub fn may_block_here() -> bool {
    OFF_THE_WORKERS.with(Cell::get)
}
