//! The process-wide wasmtime engine: its settings, the instance allocator
//! (pooling when the machine allows it), the epoch ticker, and loading
//! plugins (through the on-disk [`ComponentCache`] when there is one).

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy};

use super::cache::ComponentCache;
use super::footprint::Footprint;
use super::host::HostState;
use super::policy::{Allocator, PluginSpec};
use super::pool::{allocator_refused, PoolPlan, MAX_CONCURRENT_CALLS, MAX_CONCURRENT_EVENT_CALLS};
use super::{bindings, LoadError, Plugin, PluginInfo};

/// How often the epoch advances. A guest yields to the async runtime at
/// every tick, so this bounds both how late a timeout can fire and how long
/// a busy guest can hold a tokio worker; 10 ms keeps the cost of the yields
/// far below 1% while a 2 s timeout is enforced within 1%.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The exported interfaces a plugin may implement (their package version is
/// the WIT version this enrichd supports; `inspect` reads it from here).
pub(crate) const HANDLER_EXPORT: &str = "enrichd:plugin/handler@0.2.0";
pub(crate) const EVENTS_EXPORT: &str = "enrichd:plugin/events@0.2.0";

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Which instance allocator to use.
    pub allocator: Allocator,
    /// Meter fuel (needed when any plugin has a fuel limit).
    pub fuel: bool,
    /// The largest memory limit of any plugin (sizes pool slots).
    pub max_memory_bytes: usize,
    /// The largest table limit of any plugin (sizes pool slots).
    pub max_table_elements: usize,
    /// The largest `max_instances` of any plugin (the pool's per-component
    /// caps on core instances, memories and tables).
    pub max_instances: usize,
    /// Where precompiled components are cached; `None`: compile every time.
    pub cache_dir: Option<PathBuf>,
}

/// The allocator actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorKind {
    /// Pooling instance allocator.
    Pooling,
    /// On-demand allocation.
    OnDemand,
}

/// The engine, its linker and epoch ticker, and a bound on concurrent calls.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    options: EngineOptions,
    allocator: AllocatorKind,
    cache: Option<Arc<ComponentCache>>,
    permits: super::CallPermits,
    _ticker: EpochTicker,
}

impl PluginEngine {
    /// Create the engine (probing the pooling allocator when asked to) and
    /// start its epoch ticker.
    pub fn new(options: EngineOptions) -> Result<Self, LoadError> {
        let (engine, allocator) = match options.allocator {
            Allocator::OnDemand => (build_engine(&options, false)?, AllocatorKind::OnDemand),
            Allocator::Pooling => (build_engine(&options, true)?, AllocatorKind::Pooling),
            Allocator::Auto => match build_engine(&options, true) {
                Ok(engine) => (engine, AllocatorKind::Pooling),
                Err(e) => {
                    tracing::warn!(error = %e, "pooling allocator unavailable here; using on-demand allocation");
                    (build_engine(&options, false)?, AllocatorKind::OnDemand)
                }
            },
        };
        tracing::info!(allocator = ?allocator, fuel = options.fuel, "wasm engine ready");
        let mut linker = Linker::new(&engine);
        // wasi:http for every plugin (a ComponentizeJS build imports it by
        // default); requests are denied unless granted (`plugin::http`).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| {
                bindings::EnrichdPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
                    &mut linker,
                    |s| s,
                )
            })
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let _ticker = EpochTicker::start(engine.clone())
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(PluginEngine {
            engine,
            linker,
            cache: options
                .cache_dir
                .clone()
                .map(|dir| Arc::new(ComponentCache::new(dir))),
            options,
            allocator,
            permits: super::CallPermits {
                deliveries: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS as usize)),
                events: Arc::new(tokio::sync::Semaphore::new(
                    MAX_CONCURRENT_EVENT_CALLS as usize,
                )),
            },
            _ticker,
        })
    }

    /// The settings the engine was built with (a reload checks new limits
    /// against the pool they sized).
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The allocator in use.
    pub fn allocator(&self) -> AllocatorKind {
        self.allocator
    }

    /// The component cache, if there is one: it knows which entries the
    /// plugins loaded so far use (to sweep the others) and its size.
    pub fn cache(&self) -> Option<&Arc<ComponentCache>> {
        self.cache.as_ref()
    }

    /// The pooling allocator's idle memory slots: how many were used
    /// before, and the bytes they keep resident between calls
    /// ([`MEMORY_KEEP_RESIDENT`] at most each); `None` with on-demand
    /// allocation. For benches and tests of the pool's RSS.
    pub fn pool_resident(&self) -> Option<(u32, usize)> {
        self.engine
            .pooling_allocator_metrics()
            .map(|m| (m.unused_warm_memories(), m.unused_memory_bytes_resident()))
    }

    /// The call permits of event plugins ([`MAX_CONCURRENT_EVENT_CALLS`]).
    /// Shared with every plugin; for stats and for tests that saturate them.
    pub fn event_permits(&self) -> Arc<tokio::sync::Semaphore> {
        self.permits.events.clone()
    }

    /// The call permits of delivery plugins ([`MAX_CONCURRENT_CALLS`]).
    pub fn delivery_permits(&self) -> Arc<tokio::sync::Semaphore> {
        self.permits.deliveries.clone()
    }

    /// Compile (or load from the cache) a plugin, check its pin, and check
    /// it against the `delivery-plugin` world. Done once per plugin at start.
    pub fn load(&self, spec: &PluginSpec) -> Result<Plugin, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            name: spec.name.clone(),
            reason,
        };
        let bytes = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
            name: spec.name.clone(),
            path: spec.path.display().to_string(),
            source,
        })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(pin) = spec.sha256 {
            if pin != digest {
                return Err(LoadError::PinMismatch {
                    name: spec.name.clone(),
                    path: spec.path.display().to_string(),
                    expected: hex::encode(pin),
                    actual: hex::encode(digest),
                });
            }
        }
        // Before compiling, and the same under both allocators: limits below
        // what the component needs at instantiation would fail every call
        // (on-demand) or have the pool refuse it (pooling). A file wasmparser
        // cannot read is left to the compiler's error message.
        let below = |below| LoadError::BelowFootprint {
            name: spec.name.clone(),
            below,
        };
        if let Ok(footprint) = Footprint::of(&bytes) {
            footprint.check(&spec.limits).map_err(below)?;
        }
        let started = Instant::now();
        let (component, cached) = self.component(&bytes, &digest).map_err(|e| {
            if allocator_refused(&e) {
                pool_refusal(&spec.name, &e)
            } else {
                invalid(format!("not a valid component: {e}"))
            }
        })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(import_refusal(&e)))?;
        // A plugin exports `handler`, `events` or both; each is resolved on
        // its own so a plugin needs only what it implements.
        let exports = |name: &str| pre.component().get_export_index(None, name).is_some();
        let handler = exports(HANDLER_EXPORT)
            .then(|| bindings::handler::GuestIndices::new(&pre))
            .transpose()
            .map_err(|e| invalid(format!("its {HANDLER_EXPORT} export is malformed: {e}")))?;
        let events = exports(EVENTS_EXPORT)
            .then(|| bindings::events::GuestIndices::new(&pre))
            .transpose()
            .map_err(|e| invalid(format!("its {EVENTS_EXPORT} export is malformed: {e}")))?;
        if handler.is_none() && events.is_none() {
            return Err(invalid(format!(
                "exports neither {HANDLER_EXPORT} nor {EVENTS_EXPORT}: not an enrichd plugin"
            )));
        }
        tracing::info!(
            plugin = %spec.name,
            path = %spec.path.display(),
            sha256 = %hex::encode(digest),
            from_cache = cached,
            ms = started.elapsed().as_millis() as u64,
            "plugin loaded"
        );
        Ok(Plugin {
            info: Arc::new(PluginInfo {
                name: spec.name.clone(),
                grants: spec.grants.clone(),
                config: spec.config.clone(),
                timeout: spec.timeout,
                limits: spec.limits,
                on_error: spec.on_error,
                crm_sources: spec.crm_sources.clone(),
                kv_read: spec.kv_read.clone(),
                allowed_hosts: spec.allowed_hosts.clone(),
                http_connections: Arc::new(tokio::sync::Semaphore::new(
                    spec.limits.http_connections,
                )),
            }),
            pre,
            handler,
            events,
            fuel_metered: self.options.fuel,
            sha256: digest,
            permits: self.permits.clone(),
            calls: Default::default(),
            breaker: super::breaker::Breaker::new(&spec.name, spec.limits.breaker),
        })
    }

    /// The component for `bytes`: from the cache when there is one (see
    /// [`ComponentCache`]), else compiled. Returns whether the cache served it.
    fn component(&self, bytes: &[u8], digest: &[u8; 32]) -> wasmtime::Result<(Component, bool)> {
        match &self.cache {
            Some(cache) => cache.component(&self.engine, bytes, digest),
            None => Ok((Component::new(&self.engine, bytes)?, false)),
        }
    }
}

/// The pool's refusal of a component that passed the footprint check (a
/// composed component whose adapter modules the static count does not see):
/// the limit to raise is still `max_instances`.
fn pool_refusal(name: &str, e: &wasmtime::Error) -> LoadError {
    LoadError::Invalid {
        name: name.to_string(),
        reason: format!(
            "its component does not fit the pooling allocator sized from the plugins' limits ({e:#}); raise max_instances (or max_memory_bytes, max_table_elements) for this plugin"
        ),
    }
}

/// Why a component's imports cannot be linked.
fn import_refusal(e: &impl std::fmt::Display) -> String {
    format!("imports something enrichd does not provide: {e}")
}

fn build_engine(options: &EngineOptions, pooling: bool) -> Result<Engine, LoadError> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(options.fuel);
    // Instantiate linear memories from copy-on-write images of their
    // initial data: a fresh instance per call then costs a few page mappings.
    config.memory_init_cow(true);
    if pooling {
        let plan = PoolPlan::new(
            options.max_instances,
            options.max_memory_bytes,
            options.max_table_elements,
        )
        .map_err(LoadError::Engine)?;
        tracing::debug!(
            ?plan,
            reserved_gib = plan.reserved_bytes() >> 30,
            "pooling allocator"
        );
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(plan.config()));
    }
    Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread until
/// dropped.
struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("enrichd-epoch".into())
            .spawn(move || {
                // Ticks until the sender is dropped (Disconnected).
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::policy::{Limits, OnError};

    /// A component instantiating an empty core module twice (it exports
    /// nothing, so `load` gets as far as the pool's verdict and no further).
    fn two_instances() -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        c.extend_from_slice(&[1, 8]);
        c.extend_from_slice(b"\0asm\x01\0\0\0");
        c.extend_from_slice(&[2, 7, 2, 0, 0, 0, 0, 0, 0]);
        c
    }

    /// The pool refusing a component after the footprint check (here: a pool
    /// sized for fewer instances than the plugin's own limit, as a composed
    /// component's adapter modules would make it) gives the clear error,
    /// and the cache entry is not recompiled for it.
    #[test]
    fn issue_16_a_cache_entry_the_pool_refuses_is_not_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.wasm");
        std::fs::write(&path, two_instances()).unwrap();
        let cache = dir.path().join("cache");
        let engine = PluginEngine::new(EngineOptions {
            allocator: Allocator::Pooling,
            fuel: false,
            max_memory_bytes: 1 << 20,
            max_table_elements: 1000,
            max_instances: 1,
            cache_dir: Some(cache.clone()),
        })
        .unwrap();
        let spec = PluginSpec {
            name: "two".into(),
            path,
            grants: Default::default(),
            config: Default::default(),
            timeout: Duration::from_secs(1),
            limits: Limits::default(),
            on_error: OnError::default(),
            sha256: None,
            crm_sources: vec![],
            kv_read: vec![],
            allowed_hosts: vec![],
        };
        let refusal = |engine: &PluginEngine| match engine.load(&spec) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("loaded"),
        };
        let first = refusal(&engine);
        assert!(
            first.starts_with("plugin \"two\": its component does not fit the pooling allocator")
                && first.contains("2 core module instances")
                && first.ends_with(
                    "raise max_instances (or max_memory_bytes, max_table_elements) for this plugin"
                ),
            "{first}"
        );
        let entry = || {
            let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
            assert_eq!(
                entries.len(),
                1,
                "one entry, kept for when the limit is raised"
            );
            let meta = entries[0].as_ref().unwrap().metadata().unwrap();
            std::os::unix::fs::MetadataExt::ino(&meta)
        };
        let written = entry();
        assert_eq!(refusal(&engine), first, "the same refusal from the cache");
        assert_eq!(entry(), written, "not recompiled (a rewrite is a new file)");
    }
}
