//! The clock stored answers, queued callbacks and cached CRM values are
//! stamped and expired with.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds that advance with tokio's clock.
///
/// Stored answers carry wall-clock times (they must mean the same after a
/// restart, and on another host), but retention is measured with this
/// clock: it is read once at start and then advanced by tokio's monotonic
/// clock, so a wall-clock jump (NTP, an operator) does not expire or
/// resurrect answers, and tests can move time with tokio's paused clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start_ms: u64,
    started: tokio::time::Instant,
}

impl Clock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall_at_start_ms: wall,
            started: tokio::time::Instant::now(),
        }
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.wall_at_start_ms + self.started.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time() {
        let clock = Clock::new();
        let before = clock.now_ms();
        tokio::time::advance(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms() - before, 3_600_000);
    }
}
