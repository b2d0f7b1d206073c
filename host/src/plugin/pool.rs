//! Sizing wasmtime's pooling instance allocator from the configured plugin
//! limits: per component instance it admits exactly what the per-store
//! limiter admits (`max_instances` core instances, memories and tables), so
//! a component runs under both allocators or under neither; in total it
//! holds one slot per concurrent call, and its reservation of address space
//! is computed and refused when it is not sane.

use wasmtime::{Enabled, PoolingAllocationConfig};

/// Delivery plugin calls allowed at once (with either allocator). Each
/// delivery runs one plugin at a time, so this is also the number of
/// deliveries in flight before new ones queue.
pub const MAX_CONCURRENT_CALLS: u32 = 256;
/// Event plugin calls allowed at once, from a pool of their own so that a
/// flood of deliveries cannot starve EngageLab callbacks (nor the reverse).
/// The event worker runs one call at a time; 4 leaves room for it to be
/// parallelised, and costs 4 pool slots.
pub const MAX_CONCURRENT_EVENT_CALLS: u32 = 4;
/// Bytes of a linear memory's dirty pages reset in place (copied back from
/// the image or zeroed) when its instance is dropped, instead of released
/// with `madvise`. An madvise costs a TLB shootdown on every core running
/// the process, and the next call in the slot re-faults every page it
/// touches: about half of a plugin call's CPU in the profile. With
/// `PAGEMAP_SCAN` only the pages the call wrote are reset; the example
/// plugins write tens of KiB per call (crm-enrich's slot keeps 16 KiB: the
/// `plugin_runtime` bench prints it), so 1 MiB leaves room for bigger
/// guests, and dirt beyond it is still released with `madvise`. RSS: a slot
/// keeps at most what its last call wrote, up to this, so no more than the
/// calls needed while they ran.
pub const MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// Concurrent plugin instances the pool is sized for: every delivery and
/// event call that holds a permit.
pub(crate) const POOL_INSTANCES: u32 = MAX_CONCURRENT_CALLS + MAX_CONCURRENT_EVENT_CALLS;
/// Linear memories the pool holds per concurrent call. Each is a 4 GiB +
/// 32 MiB reservation of address space (wasmtime's default
/// `memory_reservation`, which lets compiled code skip bounds checks, and
/// its guard), so multiplying them by `max_instances` (32 by default) would
/// reserve 33 TiB: a quarter of the 128 TiB a process has. The components
/// of all three toolchains (Rust, componentize-py, ComponentizeJS) define
/// one memory; 4 per call leaves room and reserves 4.1 TiB, as before pool
/// sizing followed the limits. A component defining more (it may, up to
/// `max_instances`) only runs fewer calls at once: a call that finds no free
/// slot fails as `instantiate`.
pub(crate) const POOL_MEMORIES_PER_CALL: u32 = 4;
/// Tables the pool holds per concurrent call, for the same reason: each is
/// `max_table_elements` × 8 bytes (800 KB at the default 100 000), and the
/// toolchains' components define 1 (Rust, ComponentizeJS) to 2
/// (componentize-py).
pub(crate) const POOL_TABLES_PER_CALL: u32 = 8;
/// Address space the pool may reserve, memories and tables together: 16 TiB,
/// an eighth of the 47-bit user address space, leaving the rest to the heap,
/// sled's and the cache's mappings, thread stacks and ASLR. With the
/// defaults the pool reserves 4.1 TiB; only a huge `max_table_elements` can
/// reach the budget, and is refused (on-demand allocation has no pool).
pub(crate) const POOL_ADDRESS_SPACE_BUDGET: u64 = 16 << 40;
/// wasmtime 48's linear-memory reservation and guard on 64-bit hosts
/// (`Tunables::default_for_target`): what each pooled memory slot reserves
/// at least.
const MEMORY_SLOT_RESERVATION: u64 = 1 << 32;
const MEMORY_GUARD: u64 = 32 << 20;
/// Bytes per table element the table pool reserves (a function reference).
const TABLE_ELEMENT_BYTES: u64 = 8;
/// The same for tables: a component's tables are a few KiB of function
/// references, all written at instantiation, so resetting them with a
/// memset is cheaper than an madvise.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Free slots kept warm (affine to the plugin that last used them, its
/// pages resident) before the pool takes a slot never used. wasmtime's
/// default, 100, lets the slots in use over a run grow to the peak number of
/// concurrent calls plus 100, each keeping its resident pages; 16 is enough
/// for each plugin of a chain of a few to find a warm slot of its own, and
/// bounds the RSS of idle slots to 16 MiB.
const POOL_MAX_UNUSED_WARM_SLOTS: u32 = 16;

/// The pool's sizes, derived from the largest limits of the plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolPlan {
    /// Core instances, memories and tables one component instance may have:
    /// the largest `max_instances`.
    pub per_component: u32,
    /// Linear memories in the pool.
    pub total_memories: u32,
    /// Tables in the pool.
    pub total_tables: u32,
    /// The largest `max_memory_bytes`.
    pub memory_bytes: usize,
    /// The largest `max_table_elements`.
    pub table_elements: usize,
}

impl PoolPlan {
    /// Size the pool for the largest limits of any plugin; an error (for
    /// the operator) when its address space would exceed the budget.
    pub fn new(
        max_instances: usize,
        memory_bytes: usize,
        table_elements: usize,
    ) -> Result<Self, String> {
        let per_component = u32::try_from(max_instances).unwrap_or(u32::MAX).max(1);
        let plan = PoolPlan {
            per_component,
            total_memories: POOL_INSTANCES * per_component.min(POOL_MEMORIES_PER_CALL),
            total_tables: POOL_INSTANCES * per_component.min(POOL_TABLES_PER_CALL),
            memory_bytes,
            table_elements,
        };
        let reserved = plan.reserved_bytes();
        if reserved > POOL_ADDRESS_SPACE_BUDGET {
            return Err(format!(
                "the pool would reserve {} GiB of address space for max_memory_bytes = {memory_bytes} and max_table_elements = {table_elements} (largest of the plugins), above its budget of {} GiB; lower max_table_elements or use allocator = \"on-demand\"",
                reserved >> 30,
                POOL_ADDRESS_SPACE_BUDGET >> 30
            ));
        }
        Ok(plan)
    }

    /// Address space the pool reserves: each memory slot holds the larger
    /// of the reservation and the memory limit, plus its guard; each table
    /// slot its elements.
    pub fn reserved_bytes(&self) -> u64 {
        let slot = MEMORY_SLOT_RESERVATION.max(self.memory_bytes as u64) + MEMORY_GUARD;
        let table = (self.table_elements as u64)
            .saturating_mul(TABLE_ELEMENT_BYTES)
            .next_multiple_of(4096);
        (u64::from(self.total_memories) * slot)
            .saturating_add(u64::from(self.total_tables).saturating_mul(table))
    }

    /// wasmtime's configuration of this pool.
    pub fn config(&self) -> PoolingAllocationConfig {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            // Core instances cost the pool a counter (their state is
            // allocated per instance), so every call may use its maximum.
            .total_core_instances(POOL_INSTANCES.saturating_mul(self.per_component))
            .total_memories(self.total_memories)
            .total_tables(self.total_tables)
            .total_stacks(POOL_INSTANCES)
            .max_core_instances_per_component(self.per_component)
            .max_memories_per_component(self.per_component)
            .max_tables_per_component(self.per_component)
            // wasmtime's default is 1 of each per module; the store limiter
            // admits up to `max_instances` (validation only, no pool cost).
            .max_memories_per_module(self.per_component)
            .max_tables_per_module(self.per_component)
            .table_elements(self.table_elements)
            .max_memory_size(self.memory_bytes)
            .max_unused_warm_slots(POOL_MAX_UNUSED_WARM_SLOTS)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
        // `decommit_batch_size` stays at wasmtime's 1: with memory reset in
        // place little is left to release, and a batch would hold its slots
        // back from reuse until it is flushed.
        // Without PAGEMAP_SCAN (Linux before 6.7) wasmtime would memset the
        // *lowest* bytes up to the amount kept resident, dirty or not, while
        // a Rust guest writes near the top of its stack (1 MiB up) and above:
        // there a full madvise reset is cheaper.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT);
        }
        pool
    }
}

/// Whether the pooling allocator refused the component (every message of
/// wasmtime 48's `validate_component` says "pooling allocator"): a reason
/// recompiling cannot fix.
pub(super) fn allocator_refused(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|c| c.to_string().contains("pooling allocator"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::policy::{
        DEFAULT_MAX_INSTANCES, DEFAULT_MAX_MEMORY_BYTES, DEFAULT_MAX_TABLE_ELEMENTS,
    };

    #[test]
    fn issue_16_pool_caps_follow_max_instances_and_its_reservation_stays_bounded() {
        let defaults = PoolPlan::new(
            DEFAULT_MAX_INSTANCES,
            DEFAULT_MAX_MEMORY_BYTES,
            DEFAULT_MAX_TABLE_ELEMENTS,
        )
        .unwrap();
        assert_eq!(defaults.per_component, 32);
        assert_eq!(defaults.total_memories, 260 * 4);
        // 1040 × (4 GiB + 32 MiB) + 2080 × 800 KiB: about 4.1 TiB.
        assert!(
            (4 << 40..5 << 40).contains(&defaults.reserved_bytes()),
            "{}",
            defaults.reserved_bytes()
        );
        // A huge max_instances raises the per-component caps, not the
        // memory reservation.
        let many =
            PoolPlan::new(10_000, DEFAULT_MAX_MEMORY_BYTES, DEFAULT_MAX_TABLE_ELEMENTS).unwrap();
        assert_eq!(many.per_component, 10_000);
        assert_eq!(many.reserved_bytes(), defaults.reserved_bytes());
        // A few instances: fewer slots.
        let two = PoolPlan::new(2, DEFAULT_MAX_MEMORY_BYTES, DEFAULT_MAX_TABLE_ELEMENTS).unwrap();
        assert_eq!((two.total_memories, two.total_tables), (520, 520));
        // Tables of a billion elements would reserve 16 TiB and more.
        let err = PoolPlan::new(32, DEFAULT_MAX_MEMORY_BYTES, 1_000_000_000).unwrap_err();
        assert!(
            err.contains("max_table_elements = 1000000000") && err.contains("on-demand"),
            "{err}"
        );
    }
}
