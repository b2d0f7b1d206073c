//! # fat-memory (test plugin)
//!
//! A component whose linear memory *starts* at more than 80 MiB: a static
//! of [`FAT_BYTES`] zeroed bytes lives in its memory from instantiation on,
//! before any code runs. The host must refuse such a plugin at start, with
//! a message naming what it needs and its `max_memory_bytes`, under every
//! instance allocator (issue 9).
//!
//! `handle` reads one byte of the static (so it is not optimized away) and
//! returns no actions. Capabilities: none. Config keys: none.

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../../wit",
});

use std::sync::atomic::{AtomicU8, Ordering};

use enrichd::plugin::types::{Delivery, PluginError, PluginOutput};
use exports::enrichd::plugin::handler::Guest;

/// Size of the static: 80 MiB, above the host's default 64 MiB limit.
pub const FAT_BYTES: usize = 80 << 20;

/// Zero-initialised, so it lands in the memory's initial size (bss), not in
/// a data segment: the component stays small on disk.
static FAT: [AtomicU8; FAT_BYTES] = [const { AtomicU8::new(0) }; FAT_BYTES];

/// The plugin; exported as the `handler` interface.
struct FatMemory;

impl Guest for FatMemory {
    fn handle(delivery: Delivery) -> Result<PluginOutput, PluginError> {
        let i = delivery.id.len() * 4096 % FAT_BYTES;
        let byte = FAT[i].fetch_add(1, Ordering::Relaxed);
        Ok(PluginOutput {
            actions: Vec::new(),
            message: Some(format!("fat-memory: byte {i} was {byte}")),
        })
    }
}

export!(FatMemory);
