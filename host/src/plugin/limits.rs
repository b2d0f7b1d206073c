//! The per-call resource limiter.
//!
//! wasmtime's `StoreLimits` refuses growth but does not say afterwards that
//! it did, and a guest whose allocation fails usually just aborts (a trap
//! that reads "unreachable"). This limiter refuses the same way and also
//! remembers the refusal, so the failure can be reported as what it was:
//! the plugin hit its memory limit.

use wasmtime::ResourceLimiter;

use super::policy::Limits;

/// Which limit a call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A memory wanted to grow to this many bytes.
    Memory(usize),
    /// A table wanted this many elements.
    Table(usize),
}

/// Limits of one store, with a record of the first refusal.
pub struct Limiter {
    limits: Limits,
    /// The first growth that was refused.
    pub hit: Option<LimitHit>,
    /// Linear memory the store's instances hold now.
    held_memory_bytes: usize,
    /// The most linear memory the store's instances held at once.
    pub peak_memory_bytes: usize,
}

impl Limiter {
    /// A limiter enforcing a plugin's memory, table and instance limits.
    pub fn new(limits: Limits) -> Self {
        Limiter {
            limits,
            hit: None,
            held_memory_bytes: 0,
            peak_memory_bytes: 0,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.max_memory_bytes {
            self.hit.get_or_insert(LimitHit::Memory(desired));
            return Ok(false);
        }
        // Called for each memory's creation too (from 0), so the sum is
        // what the instances hold.
        self.held_memory_bytes += desired.saturating_sub(current);
        self.peak_memory_bytes = self.peak_memory_bytes.max(self.held_memory_bytes);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.max_table_elements {
            self.hit.get_or_insert(LimitHit::Table(desired));
            return Ok(false);
        }
        Ok(true)
    }

    // One limit for the three counts: `footprint::Footprint::min_instances`
    // and the pool's per-component caps (`pool`) follow the same rule.
    fn instances(&self) -> usize {
        self.limits.max_instances
    }

    fn tables(&self) -> usize {
        self.limits.max_instances
    }

    fn memories(&self) -> usize {
        self.limits.max_instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_within_the_limit_is_allowed_and_beyond_it_refused_and_remembered() {
        let mut l = Limiter::new(Limits {
            max_memory_bytes: 1 << 20,
            max_table_elements: 5000,
            ..Limits::default()
        });
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(l.hit, None);
        assert!(!l.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(!l.memory_growing(1 << 20, 3 << 20, None).unwrap());
        assert_eq!(
            l.hit,
            Some(LimitHit::Memory(2 << 20)),
            "the first refusal is kept"
        );
        assert_eq!(l.peak_memory_bytes, 1 << 20, "refused growth is not held");
        assert!(l.memory_growing(0, 1 << 16, None).unwrap());
        assert_eq!(
            l.peak_memory_bytes,
            (1 << 20) + (1 << 16),
            "memories add up"
        );
        assert!(l.table_growing(0, 5000, None).unwrap());
        assert!(!l.table_growing(0, 5001, None).unwrap());
    }
}
