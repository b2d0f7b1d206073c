//! The plugin runtime: one wasmtime engine for the process (`engine`), each
//! plugin compiled once into an `InstancePre`, and a fresh store (fresh
//! instance, fresh WASI context, fresh limits) for every call.
//!
//! Sandboxing: a guest gets an empty WASI context (no files, environment,
//! arguments or sockets; stdout/stderr captured, see `stdio`) and only the
//! imports its config grants (`host`). Time is bounded with epoch
//! interruption: guests yield to tokio at every epoch tick, and the caller's
//! timeout drops the call's future, ending the instance wherever it was —
//! host calls it made included. Memory, fuel and output are bounded per call
//! (`limits`, [`Plugin::call`]); the guest's texts (message, error, trap)
//! are cut to `max_message_bytes`. Before compiling, a component's static
//! footprint (`footprint`) is checked against its limits, and the pooling
//! allocator is sized from the plugins' limits (`pool`), so a component runs
//! under both allocators or is refused at start by both.

mod bindings;
pub mod breaker;
pub mod cache;
mod engine;
pub mod footprint;
mod host;
pub mod http;
mod http_tape;
pub mod inspect;
mod limits;
pub mod policy;
mod pool;
pub mod recording;
mod stdio;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

// Every deadline is on tokio's clock, so timers and deadlines agree (also
// under tokio's test clock).
use tokio::time::Instant;

use tokio::runtime::RuntimeFlavor;
use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;

pub use bindings::events::EngagelabEvent as WitEvent;
pub use bindings::events::EventKind as WitEventKind;
/// The WIT types plugins see (delivery, actions, output), for the side that
/// converts to and from them.
pub use bindings::types as wit;
pub use bindings::types::Delivery as WitDelivery;
pub use engine::{AllocatorKind, EngineOptions, PluginEngine, EPOCH_TICK};
use host::HostState;
pub use host::Services;
use limits::{LimitHit, Limiter};
pub use policy::{Grants, Limits, OnError};
pub use pool::{MAX_CONCURRENT_CALLS, MAX_CONCURRENT_EVENT_CALLS, MEMORY_KEEP_RESIDENT};
pub use stdio::MAX_CAPTURED_BYTES;

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
    /// Sandbox limits.
    pub limits: Limits,
    /// Failure policy.
    pub on_error: OnError,
    /// Indexes of the CRM sources this plugin may use.
    pub crm_sources: Vec<usize>,
    /// Other plugins' kv namespaces this plugin may read.
    pub kv_read: Vec<String>,
    /// Where the plugin may send HTTP requests (with `http` granted).
    pub allowed_hosts: Vec<policy::HttpOrigin>,
    /// Its open outbound connections, across calls (`http_connections`).
    pub http_connections: Arc<tokio::sync::Semaphore>,
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
    /// The file is not the one the config pins.
    #[error("plugin {name:?}: {path} has sha256 {actual}, but the config pins {expected}; refusing to start")]
    PinMismatch {
        /// Plugin name.
        name: String,
        /// Path.
        path: String,
        /// Pinned digest (hex).
        expected: String,
        /// Digest of the file (hex).
        actual: String,
    },
    /// A limit of the plugin is below what its component needs to be
    /// instantiated at all (checked before compiling, for both allocators).
    #[error("plugin {name:?}: {below}")]
    BelowFootprint {
        /// Plugin name.
        name: String,
        /// Which limit, and what the component needs.
        below: footprint::BelowFootprint,
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
    /// The plugin's own timeout ran out.
    #[error("timeout after {0} ms")]
    Timeout(u64),
    /// The delivery's budget ran out while the plugin ran.
    #[error("delivery budget ran out after {0} ms in this plugin")]
    OutOfTime(u64),
    /// The fuel budget ran out.
    #[error("fuel budget of {0} exhausted")]
    Fuel(u64),
    /// The plugin tried to grow memory beyond its limit and trapped.
    #[error("memory limit of {limit} bytes exceeded (wanted {wanted}): {trap}")]
    Memory {
        /// The limit.
        limit: usize,
        /// The size it asked for.
        wanted: usize,
        /// The trap that followed.
        trap: String,
    },
    /// The guest trapped (panic, unreachable, stack overflow, …).
    #[error("trap: {0}")]
    Trap(String),
    /// The output was over a limit and was refused whole.
    #[error("output limit: {0}")]
    OutputLimit(String),
    /// The guest returned a `plugin-error`.
    #[error("guest error: {0}")]
    Guest(String),
    /// The call could not start (instantiation failed).
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// The call never started: no instance slot became free within its
    /// time (this many ms). The host was saturated; the plugin did nothing.
    #[error("no free instance slot within {0} ms")]
    Busy(u64),
    /// The call was not made: the plugin's circuit breaker is open after
    /// repeated failures, for this many more ms.
    #[error("quarantined after repeated failures; {0} ms of cool-down left")]
    Quarantined(u64),
}

impl Failure {
    /// Short name of the failure kind, for the envelope message.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout(_) => "timeout",
            Failure::OutOfTime(_) => "out of time",
            Failure::Fuel(_) => "fuel",
            Failure::Memory { .. } => "memory",
            Failure::Trap(_) => "trap",
            Failure::OutputLimit(_) => "output limit",
            Failure::Guest(_) => "guest error",
            Failure::Instantiate(_) => "instantiate",
            Failure::Busy(_) => "busy",
            Failure::Quarantined(_) => "quarantined",
        }
    }
}

/// Turns a plugin's WIT output into the caller's type, refusing it whole
/// (`Failure::OutputLimit`) when it is over one of the plugin's limits. It
/// runs inside the call: off the async workers, and before the circuit
/// breaker counts the result, so an output refused here counts as a failure.
pub type ConvertOutput<T> = fn(wit::PluginOutput, &Limits) -> Result<T, Failure>;

/// One delivery call's result and the per-call host budgets it ran into.
#[derive(Debug)]
pub struct Called<T> {
    /// The converted output, or why there is none.
    pub result: Result<T, Failure>,
    /// Config keys of the budgets the call ran into (e.g.
    /// `kv_write_bytes_per_call`), in the order first hit; the guest got
    /// `host-error.over-limit` for each.
    pub limits_hit: Vec<&'static str>,
    /// What the call used of the sandbox's metered resources.
    pub usage: Usage,
    /// Its outbound HTTP requests (at most
    /// [`http::MAX_RECORDED_REQUESTS`]).
    pub http: Vec<http::HttpExchange>,
    /// The call's host calls and their answers ([`recording`]); in replay,
    /// the calls the recording could not answer. `None` when the call
    /// never started.
    pub host_calls: Option<recording::Recording>,
}

/// What one call used of the sandbox's metered resources: for the delivery
/// record and `enrichd plugin run`, so an author sees how close a plugin
/// runs to its limits before an operator's config refuses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Fuel consumed; `None` when fuel is not metered (no `fuel` limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// The most linear memory the call's instances held at once, in bytes
    /// (what `max_memory_bytes` bounds, summed over its memories).
    pub peak_memory_bytes: u64,
    /// Bytes the guest wrote to stdout (kept or discarded).
    pub stdout_bytes: u64,
    /// Bytes the guest wrote to stderr (kept or discarded).
    pub stderr_bytes: u64,
}

/// What a call reports besides its result: the budgets it ran into, what
/// it used, its HTTP requests, its host calls.
#[derive(Default)]
struct Report {
    limits_hit: Vec<&'static str>,
    usage: Usage,
    http: Vec<http::HttpExchange>,
    host_calls: Option<recording::Recording>,
}

impl Report {
    fn called<T>(self, result: Result<T, Failure>) -> Called<T> {
        Called {
            result,
            limits_hit: self.limits_hit,
            usage: self.usage,
            http: self.http,
            host_calls: self.host_calls,
        }
    }
}

/// A compiled plugin, ready to be instantiated per call.
pub struct Plugin {
    info: Arc<PluginInfo>,
    pre: wasmtime::component::InstancePre<HostState>,
    handler: Option<bindings::handler::GuestIndices>,
    events: Option<bindings::events::GuestIndices>,
    fuel_metered: bool,
    // SHA-256 of the component file it was loaded from: a reload reuses
    // the plugin only while the file still hashes to it.
    sha256: [u8; 32],
    permits: CallPermits,
    calls: std::sync::atomic::AtomicU64,
    /// Bypasses the plugin after repeated failures (delivery and event
    /// calls alike).
    breaker: breaker::Breaker,
}

/// The engine's call permits: one pool for delivery calls, one for event
/// calls, so neither kind can starve the other.
#[derive(Clone)]
pub(crate) struct CallPermits {
    pub(crate) deliveries: Arc<tokio::sync::Semaphore>,
    pub(crate) events: Arc<tokio::sync::Semaphore>,
}

/// A delivery instance slot held by a caller across several calls
/// ([`Plugin::reserve_slot`]); freed when dropped.
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Run `work` (plugin calls) off the async workers. Lifting a plugin's
/// output out of its memory (tens of thousands of strings) and converting
/// it is host work wasmtime does in one poll, with no epoch to yield at: on
/// a multi-threaded runtime the work runs on this thread, handed off the
/// async workers (`block_in_place`), so it cannot hold up other deliveries
/// or /healthz. Deadlines still apply inside. The sled work of the guests'
/// host calls (kv, last-known CRM values) runs on this thread too: it may
/// block already. Already off the workers (a chain handed off once for all
/// its plugins), or on a current-thread runtime (tests), `work` is awaited
/// here.
pub async fn off_the_workers<F: std::future::Future>(work: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle)
            if handle.runtime_flavor() == RuntimeFlavor::MultiThread
                && !crate::storage::may_block_here() =>
        {
            tokio::task::block_in_place(|| crate::storage::may_block(|| handle.block_on(work)))
        }
        _ => work.await,
    }
}

/// Most of the time a host lookup leaves the guest before its deadline: a
/// fallback answer returned at the very deadline would arrive too late for
/// the plugin to act on it. A quarter of what is left, at most 250 ms.
pub const HOST_CALL_RESERVE: std::time::Duration = std::time::Duration::from_millis(250);

/// When host work for a guest (a lookup, an HTTP request) must be over,
/// in a call that must be over by `deadline`: a reserve before it for the
/// guest to use the answer.
pub(crate) fn host_work_deadline(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - HOST_CALL_RESERVE.min(left / 4)
}

/// Which export a call runs, with its argument.
enum Call<'a> {
    Delivery(&'a WitDelivery),
    Event(&'a WitEvent),
}

/// What the export returned.
enum Returned {
    Delivery(Result<bindings::types::PluginOutput, bindings::types::PluginError>),
    Event(Result<(), bindings::types::PluginError>),
}

/// How a call's time limit came about, so a timeout can be reported as the
/// plugin's own or as the delivery running out of time.
#[derive(Debug, Clone, Copy)]
pub struct CallLimit {
    /// When the call must be over.
    pub deadline: Instant,
    /// Whether the deadline is the delivery budget's (not the plugin's own
    /// timeout).
    pub budget_bound: bool,
}

impl CallLimit {
    /// The failure of a call that started at `started` and was still going
    /// at `at`, past the deadline: the plugin's own `timeout`, or `out of
    /// time` when the delivery's budget was the bound.
    pub fn overrun(&self, started: Instant, at: Instant) -> Failure {
        let ms = at.duration_since(started).as_millis() as u64;
        if self.budget_bound {
            Failure::OutOfTime(ms)
        } else {
            Failure::Timeout(ms)
        }
    }
}

impl Plugin {
    /// The plugin's name and settings.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// SHA-256 of the component file it was loaded from.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// How many calls were started since the plugin was loaded.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The plugin's circuit breaker.
    pub fn breaker(&self) -> &breaker::Breaker {
        &self.breaker
    }

    /// Whether the plugin handles Emailgistics deliveries.
    pub fn handles_deliveries(&self) -> bool {
        self.handler.is_some()
    }

    /// Whether the plugin handles EngageLab events.
    pub fn handles_events(&self) -> bool {
        self.events.is_some()
    }

    /// Run the plugin on one delivery in a fresh instance, until
    /// `limit.deadline` at the latest; `Failure::Quarantined` at once while
    /// its circuit breaker is open. The call runs off the async workers
    /// ([`off_the_workers`]) once it has an instance slot. The output is
    /// checked against `max_actions`, then handed to `convert` (which
    /// checks what else it needs, e.g. `max_output_bytes`);
    /// validation is the caller's (`chain`).
    pub async fn call<T>(
        &self,
        delivery: &WitDelivery,
        services: &Services,
        limit: CallLimit,
        convert: ConvertOutput<T>,
    ) -> Result<T, Failure> {
        self.call_reporting(delivery, services, limit, convert)
            .await
            .result
    }

    /// [`Plugin::call`], also saying which per-call host budgets (`log`,
    /// `kv`, `crm`) the call ran into, for the delivery's record.
    pub async fn call_reporting<T>(
        &self,
        delivery: &WitDelivery,
        services: &Services,
        limit: CallLimit,
        convert: ConvertOutput<T>,
    ) -> Called<T> {
        self.call_in(None, delivery, services, limit, convert).await
    }

    /// Wait for a delivery instance slot until `limit.deadline`, for a
    /// caller that runs several plugins one after another (a chain) and
    /// hands them off the async workers once ([`off_the_workers`]). The
    /// wait is on the async worker: a delivery queued for a slot holds no
    /// thread. `Failure::Busy` when none became free.
    pub async fn reserve_slot(&self, limit: CallLimit) -> Result<Slot, Failure> {
        self.acquire(self.permits.deliveries.clone(), limit)
            .await
            .map(|permit| Slot { _permit: permit })
    }

    /// [`Plugin::call_reporting`] in a slot the caller holds
    /// ([`Plugin::reserve_slot`]): no wait for one, and no hand-off of its
    /// own when the caller already runs off the workers.
    pub async fn call_in_slot<T>(
        &self,
        slot: &Slot,
        delivery: &WitDelivery,
        services: &Services,
        limit: CallLimit,
        convert: ConvertOutput<T>,
    ) -> Called<T> {
        self.call_in(Some(slot), delivery, services, limit, convert)
            .await
    }

    async fn call_in<T>(
        &self,
        slot: Option<&Slot>,
        delivery: &WitDelivery,
        services: &Services,
        limit: CallLimit,
        convert: ConvertOutput<T>,
    ) -> Called<T> {
        let mut report = Report::default();
        let result = async {
            // Checked before the instance slot is waited for; settled with the
            // final result, so output limits and guest errors count too.
            let ticket = self.breaker.admit()?;
            // Held until the instance is gone (the call's future is over).
            let _permit = match slot {
                Some(_) => None,
                None => Some(self.acquire(self.permits.deliveries.clone(), limit).await?),
            };
            let call = self.deliver(delivery, services, limit, &mut report, convert);
            ticket.settle(off_the_workers(call).await)
        }
        .await;
        report.called(result)
    }

    /// Wait for an instance slot from `pool` until the call's deadline.
    async fn acquire(
        &self,
        pool: Arc<tokio::sync::Semaphore>,
        limit: CallLimit,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Failure> {
        let started = Instant::now();
        match tokio::time::timeout_at(limit.deadline, pool.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Failure::Busy(started.elapsed().as_millis() as u64)),
        }
    }

    /// [`Plugin::call`] once it has its instance slot.
    async fn deliver<T>(
        &self,
        delivery: &WitDelivery,
        services: &Services,
        limit: CallLimit,
        report: &mut Report,
        convert: ConvertOutput<T>,
    ) -> Result<T, Failure> {
        match self
            .invoke(
                Call::Delivery(delivery),
                &delivery.id,
                services,
                limit,
                report,
            )
            .await?
        {
            Returned::Delivery(Ok(out)) => convert(self.check_output(out)?, &self.info.limits),
            Returned::Delivery(Err(guest)) | Returned::Event(Err(guest)) => Err(Failure::Guest(
                describe_guest_error(guest, self.info.limits.max_message_bytes),
            )),
            Returned::Event(Ok(())) => convert(
                wit::PluginOutput {
                    actions: Vec::new(),
                    message: None,
                },
                &self.info.limits,
            ),
        }
    }

    /// Run the plugin on one EngageLab event in a fresh instance, until
    /// `limit.deadline` at the latest; `Failure::Quarantined` at once while
    /// its circuit breaker is open.
    pub async fn call_event(
        &self,
        event: &WitEvent,
        services: &Services,
        limit: CallLimit,
    ) -> Result<(), Failure> {
        self.call_event_reporting(event, services, limit)
            .await
            .result
    }

    /// [`Plugin::call_event`], also saying which host budgets the call ran
    /// into and what it used (an event has no stored record: the end-of-call
    /// log note names the budgets; `enrichd plugin run` shows the rest).
    pub async fn call_event_reporting(
        &self,
        event: &WitEvent,
        services: &Services,
        limit: CallLimit,
    ) -> Called<()> {
        let mut report = Report::default();
        let result = match self.breaker.admit() {
            Ok(ticket) => {
                ticket.settle(self.handle_event(event, services, limit, &mut report).await)
            }
            Err(quarantined) => Err(quarantined),
        };
        report.called(result)
    }

    async fn handle_event(
        &self,
        event: &WitEvent,
        services: &Services,
        limit: CallLimit,
        report: &mut Report,
    ) -> Result<(), Failure> {
        // Held until the instance is gone (`invoke` is over).
        let _permit = self.acquire(self.permits.events.clone(), limit).await?;
        match self
            .invoke(
                Call::Event(event),
                &event.message_id,
                services,
                limit,
                report,
            )
            .await?
        {
            Returned::Event(Ok(())) | Returned::Delivery(Ok(_)) => Ok(()),
            Returned::Event(Err(guest)) | Returned::Delivery(Err(guest)) => Err(Failure::Guest(
                describe_guest_error(guest, self.info.limits.max_message_bytes),
            )),
        }
    }

    /// One call of one export, with every limit applied.
    async fn invoke(
        &self,
        call: Call<'_>,
        subject: &str,
        services: &Services,
        limit: CallLimit,
        report: &mut Report,
    ) -> Result<Returned, Failure> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        // Events have no stored record: nothing to record for them.
        let tape = match (&call, &services.replay) {
            (Call::Event(_), _) => recording::Tape::off(),
            (Call::Delivery(_), Some(replay)) => replay.tape(&self.info.name),
            (Call::Delivery(_), None) => recording::Tape::record(),
        };
        let mut store = self.new_store(subject, services, limit.deadline, tape)?;
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let missing = || wasmtime::format_err!("the plugin does not export this interface");
            Ok::<_, wasmtime::Error>(match call {
                Call::Delivery(delivery) => {
                    let guest = self
                        .handler
                        .as_ref()
                        .ok_or_else(missing)?
                        .load(&mut store, &instance)?;
                    Returned::Delivery(guest.call_handle(&mut store, delivery).await?)
                }
                Call::Event(event) => {
                    let guest = self
                        .events
                        .as_ref()
                        .ok_or_else(missing)?
                        .load(&mut store, &instance)?;
                    Returned::Event(guest.call_handle_event(&mut store, event).await?)
                }
            })
        };
        let outcome = tokio::time::timeout_at(limit.deadline, run).await;
        let result = match outcome {
            Err(_) => Err(limit.overrun(started, Instant::now())),
            Ok(Err(trap)) => Err(self.classify_trap(&trap, store.data())),
            Ok(Ok(returned)) => Ok(returned),
        };
        let [stdout_bytes, stderr_bytes] = self.forward_output(store.data());
        report
            .limits_hit
            .extend_from_slice(&store.data().budget.hit);
        let (requests, http_hit) = store.data().http.log().snapshot();
        for limit in http_hit {
            if !report.limits_hit.contains(&limit) {
                report.limits_hit.push(limit);
            }
        }
        report.http = requests;
        // Responses still being read are recorded as the guest saw them.
        store.data().http.log().flush();
        report.host_calls = store.data().tape.finish();
        report.usage = Usage {
            fuel: self.fuel_metered.then(|| {
                let given = self.info.limits.fuel.unwrap_or(u64::MAX);
                given - store.get_fuel().unwrap_or(0)
            }),
            peak_memory_bytes: store.data().limiter.peak_memory_bytes as u64,
            stdout_bytes,
            stderr_bytes,
        };
        result
    }

    fn new_store(
        &self,
        subject: &str,
        services: &Services,
        deadline: Instant,
        tape: recording::Tape,
    ) -> Result<Store<HostState>, Failure> {
        let (stdout, stderr) = (stdio::Capture::default(), stdio::Capture::default());
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let mut store = Store::new(
            self.pre.engine(),
            HostState {
                wasi,
                table: wasmtime::component::ResourceTable::new(),
                limiter: Limiter::new(self.info.limits),
                plugin: self.info.clone(),
                services: services.clone(),
                delivery_id: subject.to_owned(),
                deadline,
                stdout,
                stderr,
                budget: host::CallBudget::new(&self.info.limits),
                http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
                http: http::HttpGate::new(self.info.clone(), deadline, tape.clone()),
                tape,
            },
        );
        store.limiter(|s| &mut s.limiter);
        if self.fuel_metered {
            let fuel = self.info.limits.fuel.unwrap_or(u64::MAX);
            store
                .set_fuel(fuel)
                .map_err(|e| Failure::Instantiate(e.to_string()))?;
        }
        // The deadline must be set before the yield policy: the policy only
        // takes effect from the current deadline on.
        store.set_epoch_deadline(1);
        // Yield through tokio's `yield_now`, not wasmtime's plain self-wake:
        // a self-woken task is polled again before the worker looks at its
        // I/O driver (tokio does that only every 61 polls or when idle), so
        // two busy guests on two workers kept `/healthz` waiting ~1 s. A
        // `yield_now` task is deferred until the worker has polled I/O.
        store.epoch_deadline_callback(|_| {
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        Ok(store)
    }

    fn classify_trap(&self, err: &wasmtime::Error, state: &HostState) -> Failure {
        let trap = describe_trap(err, &state.stderr, self.info.limits.max_message_bytes);
        match (err.downcast_ref::<wasmtime::Trap>(), state.limiter.hit) {
            (Some(wasmtime::Trap::OutOfFuel), _) => {
                Failure::Fuel(self.info.limits.fuel.unwrap_or(u64::MAX))
            }
            (_, Some(LimitHit::Memory(wanted))) => Failure::Memory {
                limit: self.info.limits.max_memory_bytes,
                wanted,
                trap,
            },
            (Some(_), _) => Failure::Trap(trap),
            (None, Some(LimitHit::Table(wanted))) => Failure::Instantiate(format!(
                "{trap} (a table needs {wanted} elements, the limit is {})",
                self.info.limits.max_table_elements
            )),
            // Not a trap: instantiation or linking failed.
            (None, None) => Failure::Instantiate(trap),
        }
    }

    /// Refuse an output with more than `max_actions` whole, before it is
    /// converted: a truncated list could drop the one action that mattered,
    /// silently.
    fn check_output(&self, out: wit::PluginOutput) -> Result<wit::PluginOutput, Failure> {
        let max = self.info.limits.max_actions;
        if out.actions.len() > max {
            return Err(Failure::OutputLimit(format!(
                "{} actions returned, at most {max} allowed",
                out.actions.len(),
            )));
        }
        Ok(out)
    }

    /// Write what the guest printed to tracing, line by line with control
    /// characters escaped, within what is left of the call's log budget;
    /// then one note of what the budget dropped, if anything. Returns the
    /// bytes written to stdout and stderr.
    fn forward_output(&self, state: &HostState) -> [u64; 2] {
        let (plugin, delivery) = (&self.info.name, &state.delivery_id);
        let mut budget = state.budget.log.clone();
        let mut written = [0; 2];
        for (i, (stream, capture)) in [("stdout", &state.stdout), ("stderr", &state.stderr)]
            .into_iter()
            .enumerate()
        {
            let (text, discarded) = capture.take();
            written[i] = (text.len() + discarded) as u64;
            for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                if budget.exhausted() {
                    budget.drop_line(line.len());
                    continue;
                }
                let line = stdio::escape_controls(line);
                if budget.take(line.len()) {
                    tracing::info!(target: "enrichd::guest", %plugin, delivery = delivery.as_str(), stream, "{line}");
                }
            }
            // Output beyond the capture was never split into lines.
            budget.drop_bytes(discarded);
        }
        // One note per call: what the log budget dropped, and which other
        // import budgets the plugin ran into.
        let mut note = Vec::new();
        let (lines, bytes) = budget.dropped();
        if lines > 0 || bytes > 0 {
            let (max_lines, max_bytes) = budget.limits();
            note.push(format!("{lines} guest log lines ({bytes} bytes) dropped: over max_log_lines = {max_lines} or max_log_bytes = {max_bytes}, or beyond the {MAX_CAPTURED_BYTES} bytes kept per output stream"));
        }
        let others: Vec<_> = state
            .budget
            .hit
            .iter()
            .filter(|l| !l.starts_with("max_log"))
            .collect();
        if !others.is_empty() {
            note.push(format!("import budgets used up: {others:?}"));
        }
        if !note.is_empty() {
            tracing::warn!(target: "enrichd::guest", %plugin, delivery = delivery.as_str(), source = "host", "{}", note.join("; "));
        }
        written
    }
}

/// The trap's text, with the guest's last stderr line, cut to `max_bytes`
/// (the stderr line is the guest's to choose).
fn describe_trap(err: &wasmtime::Error, stderr: &stdio::Capture, max_bytes: usize) -> String {
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
    crate::text::cut_in_place(&mut text, max_bytes, "max_message_bytes");
    text
}

/// The guest's error as one text, cut to `max_bytes`.
fn describe_guest_error(e: bindings::types::PluginError, max_bytes: usize) -> String {
    use bindings::types::PluginError as E;
    let (case, m) = match &e {
        E::InvalidDelivery(m) => ("invalid delivery", m),
        E::Dependency(m) => ("dependency", m),
        E::Internal(m) => ("internal", m),
    };
    // Cut before formatting, so a 20 MiB error is never copied whole.
    let budget = max_bytes.saturating_sub(case.len() + 2);
    format!(
        "{case}: {}",
        crate::text::cut(m, budget, "max_message_bytes", max_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindings::types::PluginError;

    #[test]
    fn a_short_guest_error_is_kept_as_written() {
        let e = PluginError::Dependency("CRM down".into());
        assert_eq!(describe_guest_error(e, 2048), "dependency: CRM down");
    }

    #[test]
    fn a_long_guest_error_is_cut_to_the_bound_and_marked() {
        let e = PluginError::Internal("x".repeat(20 << 20));
        let text = describe_guest_error(e, 2048);
        assert!(text.len() <= 2048, "{}", text.len());
        assert!(text.starts_with("internal: xxx"));
        assert!(
            text.ends_with("… (20971520 bytes, cut at max_message_bytes = 2048)"),
            "{text}"
        );
    }

    #[test]
    fn a_long_trap_text_is_cut_to_the_bound_and_marked() {
        let err = wasmtime::format_err!("{}", "t".repeat(100_000));
        let text = describe_trap(&err, &stdio::Capture::default(), 2048);
        assert!(text.len() <= 2048, "{}", text.len());
        assert!(
            text.ends_with("(100000 bytes, cut at max_message_bytes = 2048)"),
            "{text}"
        );
        let err = wasmtime::format_err!("short");
        assert_eq!(
            describe_trap(&err, &stdio::Capture::default(), 2048),
            "short"
        );
    }
}
