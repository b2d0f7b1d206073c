//! The per-call store data and the host side of the plugin imports
//! (`log`, `config`, `crm`).
//!
//! Every import first checks the plugin's grants: an import that was not
//! granted answers `host-error::denied` (a value the guest handles), never a
//! trap, so a plugin written for a richer host still runs on a poorer one.

use std::sync::Arc;

use tokio::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::enrichd::plugin::{config, crm, kv, log, types};
use super::limits::Limiter;
use super::stdio::Capture;
use super::PluginInfo;
use crate::config::Capability;
use crate::crm::cache::{Answer, CrmSource, Provenance};

/// Most of the time a host lookup leaves the guest before its deadline: a
/// fallback answer returned at the very deadline would arrive too late for
/// the plugin to act on it. A quarter of what is left, at most 250 ms.
pub const HOST_CALL_RESERVE: std::time::Duration = std::time::Duration::from_millis(250);

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
    pub kv: Option<crate::kv::KvStore>,
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

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        mut message: String,
    ) -> wasmtime::Result<Result<(), types::HostError>> {
        if let Err(e) = self.grant(Capability::Log, "log") {
            return Ok(Err(e));
        }
        if message.len() > MAX_LOG_LINE_BYTES {
            let mut cut = MAX_LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
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

impl config::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, types::HostError>> {
        Ok(self
            .grant(Capability::Config, "config")
            .map(|()| self.plugin.config.get(&key).cloned()))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, types::HostError>> {
        Ok(self.grant(Capability::Config, "config").map(|()| {
            self.plugin
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }
}

impl HostState {
    /// When a host lookup must be over: the call's deadline, less a reserve
    /// for the guest to use the answer.
    fn lookup_deadline(&self) -> Instant {
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.deadline - HOST_CALL_RESERVE.min(left / 4)
    }

    /// The sources this plugin may use, after the grant and argument checks.
    fn crm_sources(&self, arg: &str) -> Result<Vec<Arc<CrmSource>>, types::HostError> {
        self.grant(Capability::Crm, "crm")?;
        if arg.trim().is_empty() {
            return Err(types::HostError::Invalid("empty lookup key".into()));
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
        if sources.is_empty() {
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
        let sources = match self.crm_sources(&email) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        for source in sources {
            if let Some(answer) = source.lookup_email(&email, self.lookup_deadline()).await {
                return Ok(Ok(Some(wit_answer(answer))));
            }
        }
        Ok(Ok(None))
    }

    async fn lookup_domain(
        &mut self,
        domain: String,
    ) -> wasmtime::Result<Result<Option<crm::CrmAnswer>, types::HostError>> {
        let sources = match self.crm_sources(&domain) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        for source in sources {
            if let Some(answer) = source.lookup_domain(&domain, self.lookup_deadline()).await {
                return Ok(Ok(Some(wit_answer(answer))));
            }
        }
        Ok(Ok(None))
    }
}

impl HostState {
    /// The kv store, after the grant check.
    fn kv(&self) -> Result<&crate::kv::KvStore, types::HostError> {
        self.grant(Capability::Kv, "kv")?;
        self.services
            .kv
            .as_ref()
            .ok_or_else(|| types::HostError::Unavailable("no kv store is configured".into()))
    }
}

fn kv_error(e: crate::kv::KvError) -> types::HostError {
    match e {
        crate::kv::KvError::Refused(why) => types::HostError::Invalid(why),
        crate::kv::KvError::Store(e) => types::HostError::Unavailable(e.to_string()),
    }
}

impl kv::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, types::HostError>> {
        let ns = self.plugin.name.clone();
        Ok(self.kv().and_then(|kv| kv.get(&ns, &key).map_err(kv_error)))
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<(), types::HostError>> {
        let ns = self.plugin.name.clone();
        Ok(self
            .kv()
            .and_then(|kv| kv.set(&ns, &key, &value).map_err(kv_error)))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), types::HostError>> {
        let ns = self.plugin.name.clone();
        Ok(self
            .kv()
            .and_then(|kv| kv.delete(&ns, &key).map_err(kv_error)))
    }

    async fn get_from(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, types::HostError>> {
        let kv = match self.kv() {
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
        Ok(kv.get(&namespace, &key).map_err(kv_error))
    }
}
