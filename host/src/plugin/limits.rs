//! The per-call resource limiter.
//!
//! wasmtime's `StoreLimits` refuses growth but does not say afterwards that
//! it did, and a guest whose allocation fails usually just aborts (a trap
//! that reads "unreachable"). This limiter refuses the same way and also
//! remembers the refusal, so the failure can be reported as what it was:
//! the plugin hit its memory limit.

use wasmtime::ResourceLimiter;

/// Instances per store. A Rust component has a handful of core instances;
/// componentize-py guests need more than 8; 64 leaves room without letting a
/// component instantiate without bound.
pub const MAX_INSTANCES: usize = 64;
/// Tables per store (same reasoning as [`MAX_INSTANCES`]).
pub const MAX_TABLES: usize = 64;
/// Linear memories per store (same reasoning as [`MAX_INSTANCES`]).
pub const MAX_MEMORIES: usize = 16;
/// Elements per table. Function tables of real guests hold a few thousand
/// entries; a million still costs the host only 8 MiB.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

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
    max_memory_bytes: usize,
    /// The first growth that was refused.
    pub hit: Option<LimitHit>,
}

impl Limiter {
    /// A limiter allowing `max_memory_bytes` of linear memory per memory.
    pub fn new(max_memory_bytes: usize) -> Self {
        Limiter {
            max_memory_bytes,
            hit: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.hit.get_or_insert(LimitHit::Memory(desired));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit.get_or_insert(LimitHit::Table(desired));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_within_the_limit_is_allowed_and_beyond_it_refused_and_remembered() {
        let mut l = Limiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(l.hit, None);
        assert!(!l.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(!l.memory_growing(1 << 20, 3 << 20, None).unwrap());
        assert_eq!(
            l.hit,
            Some(LimitHit::Memory(2 << 20)),
            "the first refusal is kept"
        );
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(!l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }
}
