//! The per-call store data and the host side of the plugin imports
//! (`log`, `config`, `crm`).
//!
//! Every import first checks the plugin's grants: an import that was not
//! granted answers `host-error::denied` (a value the guest handles), never a
//! trap, so a plugin written for a richer host still runs on a poorer one.
//!
//! Then its budget ([`CallBudget`]): what a call may make the host spend
//! through the imports — log lines and bytes, kv operations and bytes
//! written, CRM lookups — is bounded per call by the plugin's limits, and
//! the kv namespace by its quota. Over a budget the import answers
//! `host-error::over-limit` naming the limit, without doing the work.
//!
//! Then its tape ([`Tape`]): live, the answer is recorded for the delivery
//! record; in replay, it comes from the recording and no backend is asked
//! (see [`super::recording`]).

use std::sync::Arc;

use tokio::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::enrichd::plugin::{config, crm, kv, log, types};
use super::limits::Limiter;
use super::policy::{Capability, Limits};
use super::recording::{Replay, Tape, Taped};
use super::stdio::{escape_controls, Capture, LogBudget};
use super::{host_work_deadline, PluginInfo};
use crate::crm::cache::{Answer, CrmSource, Provenance};
use crate::crm::{MAX_ADDRESS_BYTES, MAX_DOMAIN_BYTES};
use crate::storage::kv::check_entry;
use crate::storage::{KvError, PluginKv, Quota};

/// Longest log line accepted from a guest; longer ones are cut. Keeps one
/// plugin from flooding the host's log sink through the `log` import.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// Shared services the host lends to plugin calls.
#[derive(Clone, Default)]
pub struct Services {
    /// The CRM sources behind the `crm` import, in config order; a plugin
    /// uses those its config grants.
    pub crm: Vec<Arc<CrmSource>>,
    /// The namespaces behind the `kv` import; `None` answers `unavailable`.
    pub kv: Option<Arc<dyn PluginKv>>,
    /// Replay of a logged delivery: the imports answer from its recordings
    /// instead of `crm` and `kv`, and nothing is written.
    pub replay: Option<Arc<Replay>>,
}

/// What one call has spent of its import budgets.
#[derive(Debug)]
pub struct CallBudget {
    /// Log lines and bytes (the `log` import, stdout and stderr).
    pub log: LogBudget,
    /// kv operations made.
    pub kv_ops: usize,
    /// Bytes (keys plus values) written to the kv.
    pub kv_written: usize,
    /// CRM lookups made.
    pub crm_lookups: usize,
    /// The limits this call ran into (config keys), in the order first hit.
    pub hit: Vec<&'static str>,
}

impl CallBudget {
    /// A fresh budget for one call under `limits`.
    pub fn new(limits: &Limits) -> Self {
        CallBudget {
            log: LogBudget::new(limits.max_log_lines, limits.max_log_bytes),
            kv_ops: 0,
            kv_written: 0,
            crm_lookups: 0,
            hit: Vec::new(),
        }
    }

    /// Remember that `limit` was hit and answer the guest `over-limit`.
    fn over(&mut self, limit: &'static str, message: String) -> types::HostError {
        if !self.hit.contains(&limit) {
            self.hit.push(limit);
        }
        types::HostError::OverLimit(message)
    }
}

/// Data of one store, i.e. of one plugin call.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) plugin: Arc<PluginInfo>,
    pub(super) services: Services,
    pub(super) delivery_id: String,
    /// When the call must be over: host work done for the guest (backend
    /// lookups) must finish by then too.
    pub(super) deadline: Instant,
    pub(super) stdout: Capture,
    pub(super) stderr: Capture,
    /// What this call has spent of its import budgets.
    pub(super) budget: CallBudget,
    /// `wasi:http` state, and the gate every outbound request goes through.
    pub(super) http_ctx: wasmtime_wasi_http::WasiHttpCtx,
    pub(super) http: super::http::HttpGate,
    /// The call's host calls: recorded, or served from a recording.
    pub(super) tape: Tape,
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    fn grant(&self, cap: Capability, name: &str) -> Result<(), types::HostError> {
        if self.plugin.grants.allows(cap) {
            Ok(())
        } else {
            Err(types::HostError::Denied(format!(
                "capability `{name}` is not granted to plugin {:?}",
                self.plugin.name
            )))
        }
    }
}

impl types::Host for HostState {}

impl HostState {
    /// The answer of `call(args)`: in replay from the recording, else from
    /// `live` (not polled in replay), recorded.
    async fn taped<T: Taped>(
        &mut self,
        call: &'static str,
        args: Vec<String>,
        live: impl std::future::Future<Output = Result<T, types::HostError>>,
    ) -> Result<T, types::HostError> {
        if let Some(answer) = self.tape.serve(call, &args) {
            return answer;
        }
        let answer = live.await;
        self.tape.record_call(call, args, &answer);
        answer
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
    ) -> wasmtime::Result<Result<(), types::HostError>> {
        if let Err(e) = self.grant(Capability::Log, "log") {
            return Ok(Err(e));
        }
        // Over budget: count it for the end-of-call note, spend nothing else.
        if self.budget.log.exhausted() {
            self.budget.log.drop_line(message.len());
            return Ok(Err(self.log_over_limit()));
        }
        // Cut before escaping (bounded work), and after (escapes lengthen).
        let raw = cut(&message, MAX_LOG_LINE_BYTES);
        let escaped = escape_controls(&raw);
        let message = cut(&escaped, MAX_LOG_LINE_BYTES);
        if !self.budget.log.take(message.len()) {
            return Ok(Err(self.log_over_limit()));
        }
        let (plugin, delivery) = (&self.plugin.name, &self.delivery_id);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "enrichd::guest", plugin, delivery, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "enrichd::guest", plugin, delivery, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "enrichd::guest", plugin, delivery, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "enrichd::guest", plugin, delivery, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "enrichd::guest", plugin, delivery, "{message}")
            }
        }
        Ok(Ok(()))
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with `…`
/// when something was cut.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    format!("{}…", &text[..text.floor_char_boundary(max)]).into()
}

impl HostState {
    fn log_over_limit(&mut self) -> types::HostError {
        let (lines, bytes) = self.budget.log.limits();
        self.budget.over(
            "max_log_lines/max_log_bytes",
            format!(
                "the log budget of this call is used up: max_log_lines = {lines} lines, max_log_bytes = {bytes} bytes"
            ),
        )
    }
}

impl config::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, types::HostError>> {
        if let Err(e) = self.grant(Capability::Config, "config") {
            return Ok(Err(e));
        }
        let value = self.plugin.config.get(&key).cloned();
        Ok(self
            .taped("config.get", vec![key], std::future::ready(Ok(value)))
            .await)
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, types::HostError>> {
        if let Err(e) = self.grant(Capability::Config, "config") {
            return Ok(Err(e));
        }
        let all = self
            .plugin
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(self
            .taped("config.get-all", Vec::new(), std::future::ready(Ok(all)))
            .await)
    }
}

impl HostState {
    /// When a host lookup must be over: the call's deadline, less a reserve
    /// for the guest to use the answer.
    fn lookup_deadline(&self) -> Instant {
        host_work_deadline(self.deadline)
    }

    /// The sources this plugin may use, after the grant, budget and
    /// argument checks. `max_len` is the longest key of its kind.
    fn crm_sources(
        &mut self,
        arg: &str,
        max_len: usize,
    ) -> Result<Vec<Arc<CrmSource>>, types::HostError> {
        self.grant(Capability::Crm, "crm")?;
        // Every lookup counts, answered or not: each may cost backend calls.
        self.budget.crm_lookups += 1;
        let cap = self.plugin.limits.crm_lookups_per_call;
        if self.budget.crm_lookups > cap {
            return Err(self.budget.over(
                "crm_lookups_per_call",
                format!("crm_lookups_per_call = {cap} lookups are used up in this call"),
            ));
        }
        if arg.trim().is_empty() {
            return Err(types::HostError::Invalid("empty lookup key".into()));
        }
        if arg.len() > max_len {
            return Err(types::HostError::Invalid(format!(
                "lookup keys of this kind are at most {max_len} bytes; this one is {}",
                arg.len()
            )));
        }
        // Host work on the guest's behalf must not outlive the call.
        if Instant::now() >= self.deadline {
            return Err(types::HostError::Unavailable(
                "the delivery's deadline has passed".into(),
            ));
        }
        let sources: Vec<_> = self
            .plugin
            .crm_sources
            .iter()
            .filter_map(|&i| self.services.crm.get(i).cloned())
            .collect();
        // In replay the recording answers: no source is needed.
        if sources.is_empty() && !self.tape.replaying() {
            return Err(types::HostError::Unavailable(
                "no CRM source is configured for this plugin".into(),
            ));
        }
        Ok(sources)
    }
}

fn wit_answer(a: Answer) -> crm::CrmAnswer {
    crm::CrmAnswer {
        fields: a.fields.into_iter().collect(),
        provenance: match a.provenance {
            Provenance::Fresh => crm::Provenance::Fresh,
            Provenance::Stale => crm::Provenance::Stale,
            Provenance::Domain => crm::Provenance::Domain,
        },
        age_ms: a.age_ms,
        source: a.source,
    }
}

impl crm::Host for HostState {
    async fn lookup_email(
        &mut self,
        email: String,
    ) -> wasmtime::Result<Result<Option<crm::CrmAnswer>, types::HostError>> {
        let sources = match self.crm_sources(&email, MAX_ADDRESS_BYTES) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let (deadline, args) = (self.lookup_deadline(), vec![email.clone()]);
        let live = async move {
            for source in sources {
                if let Some(answer) = source.lookup_email(&email, deadline).await {
                    return Ok(Some(wit_answer(answer)));
                }
            }
            Ok(None)
        };
        Ok(self.taped("crm.lookup-email", args, live).await)
    }

    async fn lookup_domain(
        &mut self,
        domain: String,
    ) -> wasmtime::Result<Result<Option<crm::CrmAnswer>, types::HostError>> {
        let sources = match self.crm_sources(&domain, MAX_DOMAIN_BYTES) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let (deadline, args) = (self.lookup_deadline(), vec![domain.clone()]);
        let live = async move {
            for source in sources {
                if let Some(answer) = source.lookup_domain(&domain, deadline).await {
                    return Ok(Some(wit_answer(answer)));
                }
            }
            Ok(None)
        };
        Ok(self.taped("crm.lookup-domain", args, live).await)
    }
}

impl HostState {
    /// The kv store, after the grant check and the per-call budget: one
    /// more operation, writing `write_bytes` (keys plus values). `None`
    /// only in replay, which needs no store (the recording answers).
    fn kv(&mut self, write_bytes: usize) -> Result<Option<Arc<dyn PluginKv>>, types::HostError> {
        self.grant(Capability::Kv, "kv")?;
        let kv = self.services.kv.clone();
        if kv.is_none() && !self.tape.replaying() {
            return Err(types::HostError::Unavailable(
                "no kv store is configured".into(),
            ));
        }
        let limits = self.plugin.limits;
        self.budget.kv_ops += 1;
        if self.budget.kv_ops > limits.kv_ops_per_call {
            return Err(self.budget.over(
                "kv_ops_per_call",
                format!(
                    "kv_ops_per_call = {} operations are used up in this call",
                    limits.kv_ops_per_call
                ),
            ));
        }
        if self.budget.kv_written + write_bytes > limits.kv_write_bytes_per_call {
            let written = self.budget.kv_written;
            return Err(self.budget.over(
                "kv_write_bytes_per_call",
                format!(
                    "kv_write_bytes_per_call = {} bytes: {written} written in this call, this write is {write_bytes} more",
                    limits.kv_write_bytes_per_call
                ),
            ));
        }
        Ok(kv)
    }

    /// This plugin's namespace quota.
    fn kv_quota(&self) -> Quota {
        Quota {
            max_keys: self.plugin.limits.kv_max_keys,
            max_bytes: self.plugin.limits.kv_max_bytes,
        }
    }
}

/// Longest kv value kept in a recorded `kv.set`: the write is an effect,
/// never replayed, so its start says enough, and a 64 KiB value must not
/// use up the call's recording budget.
const RECORDED_VALUE_BYTES: usize = 256;

/// A read of `key` in `namespace` (`kv` is `None` only in replay, where
/// this is not polled).
async fn kv_read(
    kv: Option<Arc<dyn PluginKv>>,
    namespace: String,
    key: String,
) -> Result<Option<String>, types::HostError> {
    let kv = kv.ok_or_else(|| types::HostError::Unavailable("no kv store is configured".into()))?;
    kv.get(&namespace, &key).await.map_err(kv_error)
}

fn kv_error(e: KvError) -> types::HostError {
    match e {
        KvError::Refused(why) => types::HostError::Invalid(why),
        KvError::OverLimit { message, .. } => types::HostError::OverLimit(message),
        e @ KvError::Storage(_) => types::HostError::Unavailable(e.to_string()),
    }
}

impl kv::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, types::HostError>> {
        let kv = match self.kv(0) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        let args = vec![key.clone()];
        let live = kv_read(kv, self.plugin.name.clone(), key);
        Ok(self.taped("kv.get", args, live).await)
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<(), types::HostError>> {
        // A malformed entry is `invalid` whatever the budget says.
        if let Err(e) = check_entry(&key, &value) {
            return Ok(Err(kv_error(e)));
        }
        let (ns, quota, bytes) = (
            self.plugin.name.clone(),
            self.kv_quota(),
            key.len() + value.len(),
        );
        let kv = match self.kv(bytes) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        // Replay writes nothing: the write is accepted and discarded.
        let Some(kv) = kv.filter(|_| !self.tape.replaying()) else {
            self.budget.kv_written += bytes;
            return Ok(Ok(()));
        };
        let answer = match kv.set_within(&ns, &key, &value, quota).await {
            Ok(()) => {
                self.budget.kv_written += bytes;
                Ok(())
            }
            Err(KvError::OverLimit { limit, message }) => Err(self.budget.over(limit, message)),
            Err(e) => Err(kv_error(e)),
        };
        let kept = crate::text::cut(
            &value,
            RECORDED_VALUE_BYTES,
            "the recorded value limit",
            RECORDED_VALUE_BYTES,
        );
        self.tape.record_call("kv.set", vec![key, kept], &answer);
        Ok(answer)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), types::HostError>> {
        let kv = match self.kv(0) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        // Replay writes nothing: the delete is accepted and discarded.
        let Some(kv) = kv.filter(|_| !self.tape.replaying()) else {
            return Ok(Ok(()));
        };
        let answer = kv.delete(&self.plugin.name, &key).await.map_err(kv_error);
        self.tape.record_call("kv.delete", vec![key], &answer);
        Ok(answer)
    }

    async fn get_from(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, types::HostError>> {
        let kv = match self.kv(0) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        // Its own namespace is always readable; others only when granted.
        if namespace != self.plugin.name && !self.plugin.kv_read.contains(&namespace) {
            return Ok(Err(types::HostError::Denied(format!(
                "plugin {:?} may not read the kv namespace {namespace:?} (grant it with kv_read)",
                self.plugin.name
            ))));
        }
        let args = vec![namespace.clone(), key.clone()];
        Ok(self
            .taped("kv.get-from", args, kv_read(kv, namespace, key))
            .await)
    }
}
