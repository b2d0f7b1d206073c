//! The per-call store data and the host side of the plugin imports
//! (`log`, `config`, `crm`).
//!
//! Every import first checks the plugin's grants: an import that was not
//! granted answers `host-error::denied` (a value the guest handles), never a
//! trap, so a plugin written for a richer host still runs on a poorer one.

use std::sync::Arc;

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::enrichd::plugin::{config, crm, log, types};
use super::limits::Limiter;
use super::stdio::Capture;
use super::PluginInfo;
use crate::config::Capability;
use crate::crm::CrmStore;

/// Longest log line accepted from a guest; longer ones are cut. Keeps one
/// plugin from flooding the host's log sink through the `log` import.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// Shared services the host lends to plugin calls.
#[derive(Clone, Default)]
pub struct Services {
    /// The CRM behind the `crm` import; `None` answers `unavailable`.
    pub crm: Option<CrmStore>,
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

impl crm::Host for HostState {
    async fn lookup_email(
        &mut self,
        email: String,
    ) -> wasmtime::Result<Result<Option<Vec<(String, String)>>, types::HostError>> {
        if let Err(e) = self.grant(Capability::Crm, "crm") {
            return Ok(Err(e));
        }
        if email.trim().is_empty() {
            return Ok(Err(types::HostError::Invalid("empty email address".into())));
        }
        // Host work on the guest's behalf must not outlive the call.
        if Instant::now() >= self.deadline {
            return Ok(Err(types::HostError::Unavailable(
                "the delivery's deadline has passed".into(),
            )));
        }
        let Some(store) = &self.services.crm else {
            return Ok(Err(types::HostError::Unavailable(
                "no CRM is configured".into(),
            )));
        };
        Ok(match store.lookup_email(&email) {
            Ok(record) => Ok(record.map(|r| r.into_iter().collect())),
            Err(e) => {
                tracing::warn!(plugin = %self.plugin.name, error = %e, "CRM lookup failed");
                Err(types::HostError::Unavailable(e.to_string()))
            }
        })
    }
}
