//! HTTPS on the public listener, as the composition root sets it up: the
//! certificate loaded at start (an error names the file), the listener
//! wrapped in TLS, and the one task that handles SIGHUP (the config, then
//! the certificate) and reloads the certificate when its files change.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::http::tls::{server_config, Certificates, TlsAcceptor, TlsSettings};

use super::StartError;

/// How often the certificate files are read to see whether they changed.
/// Reading two files of a few KiB is nothing; every 2 s means a renewed
/// certificate (certbot, an operator's copy) is served within seconds
/// without a signal.
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The public listener's TLS: its certificate, and the acceptor its
/// listener's [`crate::http::tls::TlsSwitch`] holds.
pub(super) struct PublicTls {
    pub(super) certs: Arc<Certificates>,
    pub(super) acceptor: Arc<TlsAcceptor>,
}

impl PublicTls {
    /// Load the certificate and key `settings` name.
    pub(super) fn load(settings: &TlsSettings) -> Result<Self, StartError> {
        let certs = Arc::new(Certificates::load(
            settings.files.clone(),
            crate::http::tls::provider(),
        )?);
        let config = server_config(certs.clone(), settings.min_version)
            .map_err(|e| StartError::TlsConfig(e.to_string()))?;
        Ok(PublicTls {
            certs,
            acceptor: Arc::new(TlsAcceptor::new(config, settings.handshake_timeout)),
        })
    }
}

/// Until `stopped`: run `hangup` on SIGHUP (it reloads the config, then
/// the certificate), and reload the certificate when its files change
/// (polled every [`CERT_POLL_INTERVAL`]): those `tls` returns at each
/// poll, so the files followed are the current `[tls]`'s after a reload.
/// SIGHUP is handled even without TLS, so a `systemctl reload` never kills
/// the process.
pub(super) async fn reload_task<F: Future<Output = ()>>(
    tls: impl Fn() -> Option<Arc<Certificates>>,
    stopped: impl Future<Output = ()>,
    hangup: impl Fn() -> F,
) {
    tokio::pin!(stopped);
    let mut hangups = hangups();
    let mut poll = tokio::time::interval(CERT_POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            // The outcomes are logged by the reload.
            Some(()) = next(&mut hangups) => hangup().await,
            _ = poll.tick() => {
                if let Some(certs) = tls() {
                    let _ = certs.reload_if_changed();
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
        .ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangup {
    None
}

/// The next SIGHUP; never, without a handler.
async fn next(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}
