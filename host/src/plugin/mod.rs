//! The plugin runtime: one wasmtime [`Engine`] for the process, each plugin
//! compiled once into an `InstancePre`, and a fresh [`Store`] (fresh
//! instance, fresh WASI context, fresh limits) for every call.
//!
//! Sandboxing: a guest gets an empty WASI context (no files, environment,
//! arguments or sockets; stdout/stderr captured, see [`stdio`]) and only the
//! imports its config grants ([`host`]). Time is bounded with epoch
//! interruption: a ticker thread advances the epoch every [`EPOCH_TICK`],
//! guests yield to tokio at each tick, and the caller's timeout drops the
//! call's future, which ends the instance wherever it was.

mod bindings;
mod convert;
mod host;
mod stdio;

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtxBuilder;

use crate::actions::Action;
use crate::config::{Grants, PluginSpec};
pub use bindings::types::Delivery as WitDelivery;
pub use convert::delivery as wit_delivery;
use host::HostState;
pub use host::Services;
pub use stdio::MAX_CAPTURED_BYTES;

/// How often the epoch advances. A guest yields to the async runtime at
/// every tick, so this bounds both how late a timeout can fire and how long
/// a busy guest can hold a tokio worker; 10 ms keeps the overhead of the
/// yields far below 1% while a 2 s timeout is enforced within ~1%.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Linear memory a plugin instance may grow to. Enrichment plugins need a
/// few MiB; 64 MiB stops a memory bomb long before it hurts the host.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Instances, tables and memories per store. A Rust or C guest uses one or
/// two of each; componentize-py guests need more than 8.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

/// What the rest of the host needs to know about a plugin.
#[derive(Debug)]
pub struct PluginInfo {
    /// Name from the config.
    pub name: String,
    /// Granted capabilities.
    pub grants: Grants,
    /// Values for the `config` import.
    pub config: Arc<BTreeMap<String, String>>,
    /// Wall-clock limit per call.
    pub timeout: Duration,
}

/// Why a plugin could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine could not be created.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The component file could not be read.
    #[error("plugin {name:?}: cannot read {path}: {source}")]
    Read {
        /// Plugin name.
        name: String,
        /// Path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid component, or does not fit the
    /// `delivery-plugin` world (missing export, unknown imports).
    #[error("plugin {name:?}: {reason}")]
    Invalid {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Why one plugin call produced no usable output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum Failure {
    /// The call did not finish within its time.
    #[error("timeout after {0} ms")]
    Timeout(u128),
    /// The guest trapped (panic, unreachable, out of bounds, …).
    #[error("trap: {0}")]
    Trap(String),
    /// The guest returned a `plugin-error`.
    #[error("guest error: {0}")]
    Guest(String),
}

impl Failure {
    /// Short name of the failure kind, for the envelope message.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout(_) => "timeout",
            Failure::Trap(_) => "trap",
            Failure::Guest(_) => "guest error",
        }
    }
}

/// A plugin's output, converted to host actions (not yet validated).
#[derive(Debug)]
pub struct Output {
    /// Actions in the plugin's order.
    pub actions: Vec<Action>,
    /// The plugin's own note.
    pub message: Option<String>,
}

/// The process-wide engine, linker and epoch ticker.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    _ticker: EpochTicker,
}

impl PluginEngine {
    /// Create the engine and start its epoch ticker.
    pub fn new() -> Result<Self, LoadError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| {
                bindings::DeliveryPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
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
            _ticker,
        })
    }

    /// Compile a plugin and check it against the `delivery-plugin` world.
    /// Done once per plugin at start; calls reuse the result.
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
        let started = Instant::now();
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| invalid(format!("not a valid component: {e}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::DeliveryPluginPre::new)
            .map_err(|e| invalid(format!("does not fit the delivery-plugin world: {e}")))?;
        tracing::info!(
            plugin = %spec.name,
            path = %spec.path.display(),
            compile_ms = started.elapsed().as_millis() as u64,
            "plugin loaded"
        );
        Ok(Plugin {
            info: Arc::new(PluginInfo {
                name: spec.name.clone(),
                grants: spec.grants.clone(),
                config: spec.config.clone(),
                timeout: spec.timeout,
            }),
            pre,
        })
    }
}

/// A compiled plugin, ready to be instantiated per call.
pub struct Plugin {
    info: Arc<PluginInfo>,
    pre: bindings::DeliveryPluginPre<HostState>,
}

impl Plugin {
    /// The plugin's name and settings.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Run the plugin on one delivery in a fresh instance, for at most
    /// `limit` (the caller passes min(plugin timeout, what is left of the
    /// delivery's budget)).
    pub async fn call(
        &self,
        delivery: &WitDelivery,
        services: &Services,
        limit: Duration,
    ) -> Result<Output, Failure> {
        let (stdout, stderr) = (stdio::Capture::default(), stdio::Capture::default());
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(DEFAULT_MAX_MEMORY_BYTES)
            .instances(MAX_INSTANCES)
            .tables(MAX_TABLES)
            .memories(MAX_MEMORIES)
            .build();
        let mut store = Store::new(
            self.pre.engine(),
            HostState {
                wasi,
                table: wasmtime::component::ResourceTable::new(),
                limits,
                plugin: self.info.clone(),
                services: services.clone(),
                delivery_id: delivery.id.clone(),
                stdout,
                stderr,
            },
        );
        store.limiter(|s| &mut s.limits);
        // The deadline must be set before the yield policy: the policy only
        // takes effect from the current deadline on.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            instance
                .enrichd_plugin_handler()
                .call_handle(&mut store, delivery)
                .await
        };
        let outcome = tokio::time::timeout(limit, run).await;
        let result = match outcome {
            Err(_) => Err(Failure::Timeout(limit.as_millis())),
            Ok(Err(trap)) => Err(Failure::Trap(describe_trap(&trap, &store.data().stderr))),
            Ok(Ok(Err(guest))) => Err(Failure::Guest(describe_guest_error(guest))),
            Ok(Ok(Ok(out))) => Ok(Output {
                actions: out.actions.into_iter().map(convert::action).collect(),
                message: out.message,
            }),
        };
        self.forward_output(store.data());
        result
    }

    /// Write what the guest printed to tracing.
    fn forward_output(&self, state: &HostState) {
        for (stream, capture) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
            let (text, discarded) = capture.take();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(target: "enrichd::guest", plugin = %self.info.name, delivery = %state.delivery_id, stream, "{line}");
            }
            if discarded > 0 {
                tracing::warn!(plugin = %self.info.name, stream, discarded, "guest output beyond {MAX_CAPTURED_BYTES} bytes was discarded");
            }
        }
    }
}

fn describe_trap(err: &wasmtime::Error, stderr: &stdio::Capture) -> String {
    let mut text = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err}"),
    };
    // A Rust guest's panic message is on stderr; it explains the trap far
    // better than "wasm `unreachable` instruction executed".
    if let Some(last) = stderr.last_line() {
        text.push_str(" (stderr: ");
        text.push_str(&last);
        text.push(')');
    }
    text
}

fn describe_guest_error(e: bindings::types::PluginError) -> String {
    use bindings::types::PluginError as E;
    match e {
        E::InvalidDelivery(m) => format!("invalid delivery: {m}"),
        E::Dependency(m) => format!("dependency: {m}"),
        E::Internal(m) => format!("internal: {m}"),
    }
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
