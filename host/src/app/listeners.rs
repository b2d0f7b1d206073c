//! The listeners of a running enrichd, and their replacement by a reload.
//!
//! A reload whose `listen` or `admin_listen` changed binds the new address
//! first ([`bind`]): a bind failure refuses the whole reload, and the old
//! listener keeps serving. The new listener starts serving, then the one it
//! replaces stops accepting and drains as at shutdown (the public one for
//! up to the delivery budget). An unchanged address is never re-bound: the
//! same socket serves on, with no gap.
//!
//! Each kind of listener (public, admin) is served as a series of
//! [`Sessions`], one per listener; a session ends when a later one starts,
//! when the kind is turned off (`admin_listen = "off"`), or when the server
//! stops.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Config;

/// A changed listener address that cannot be bound (in use, not local, …):
/// the reload is refused.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {error}")]
pub struct BindError {
    /// `listen` or `admin_listen`.
    pub key: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why not.
    pub error: io::Error,
}

/// The listeners a reload bound, handed to the serving loop of [`super::run`].
#[derive(Default)]
pub(super) struct Rebind {
    /// A new public listener.
    pub(super) public: Option<TcpListener>,
    /// A new admin listener (`Some(None)`: admin turned off).
    pub(super) admin: Option<Option<TcpListener>>,
}

/// What a reload re-bound, by config key: the address now listened on,
/// or `"off"` (the `listeners` of its answer).
pub type Rebound = BTreeMap<&'static str, String>;

/// Bind what changed between `running` and `new`; nothing when neither
/// `listen` nor `admin_listen` changed. All or nothing: on an error the
/// listeners already bound are dropped (closed).
pub(super) async fn bind(running: &Config, new: &Config) -> Result<(Rebind, Rebound), BindError> {
    let mut rebind = Rebind::default();
    let mut rebound = Rebound::new();
    if running.listen != new.listen {
        let (listener, addr) = bind_one("listen", new.listen).await?;
        rebound.insert("listen", addr);
        rebind.public = Some(listener);
    }
    if running.admin_listen != new.admin_listen {
        let (listener, shown) = match new.admin_listen {
            Some(addr) => {
                let (listener, addr) = bind_one("admin_listen", addr).await?;
                (Some(listener), addr)
            }
            None => (None, "off".to_owned()),
        };
        rebound.insert("admin_listen", shown);
        rebind.admin = Some(listener);
    }
    Ok((rebind, rebound))
}

/// `addr` bound, and the address it got (the port, for port 0).
async fn bind_one(key: &'static str, addr: SocketAddr) -> Result<(TcpListener, String), BindError> {
    let failed = |error| BindError { key, addr, error };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound.to_string()))
}

/// The next [`Rebind`] on `rebinds`; never, without a receiver.
pub(super) async fn next(rebinds: &mut Option<mpsc::UnboundedReceiver<Rebind>>) -> Option<Rebind> {
    match rebinds {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when a session must stop accepting and drain.
pub(super) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The sessions serving one kind of listener: the current one, and those
/// it replaced while they drain.
pub(super) struct Sessions {
    running: JoinSet<(u64, io::Result<()>)>,
    // The number of the current session; every older one stops accepting.
    current: watch::Sender<u64>,
    stopped: watch::Receiver<bool>,
}

impl Sessions {
    /// No session yet; each stops when `stopped` turns true.
    pub(super) fn new(stopped: watch::Receiver<bool>) -> Sessions {
        Sessions {
            running: JoinSet::new(),
            current: watch::Sender::new(0),
            stopped,
        }
    }

    /// Start `serve` (given its shutdown signal) as the current session;
    /// the one before stops accepting and drains.
    pub(super) fn start<F>(&mut self, serve: impl FnOnce(Shutdown) -> F)
    where
        F: Future<Output = io::Result<()>> + Send + 'static,
    {
        let n = *self.current.borrow() + 1;
        let (mut stopped, mut current) = (self.stopped.clone(), self.current.subscribe());
        let shutdown = Box::pin(async move {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => {}
                _ = current.wait_for(|c| *c > n) => {}
            }
        });
        let serving = serve(shutdown);
        self.running.spawn(async move { (n, serving.await) });
        self.current.send_replace(n);
    }

    /// Stop the current session, starting none (the listener turned off).
    pub(super) fn retire(&mut self) {
        self.current.send_modify(|n| *n += 1);
    }

    /// The next session to end: whether it was the current one (it ended
    /// on its own or on the server's stop, not replaced), and its result.
    /// `None` when none is running.
    pub(super) async fn ended(&mut self) -> Option<(bool, io::Result<()>)> {
        let joined = self.running.join_next().await?;
        Some(match joined {
            Ok((n, result)) => (n == *self.current.borrow(), result),
            Err(e) => (true, Err(io::Error::other(e))),
        })
    }

    /// Whether no session is running (all drained).
    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}
