//! `enrichd serve`: bind the public and admin listeners and serve until
//! Ctrl-C or SIGTERM, then drain both. SIGHUP and `POST /reload` read the
//! same file again, with the same command-line overrides.

use std::sync::Arc;

use anyhow::Context;

use super::ServeArgs;
use crate::config::{Config, ConfigError};

pub(super) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = crate::app::App::build(&config).await?;
        let app = Arc::new(app.reloading_from(Box::new(move || load(&args))));
        let public = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = match config.admin_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (admin_listen)"))?,
            ),
            None => None,
        };
        tracing::info!(
            addr = %public.local_addr()?,
            admin = %admin.as_ref().and_then(|l| l.local_addr().ok()).map_or("off".to_owned(), |a| a.to_string()),
            tls = config.tls.is_some(),
            routes = app.generation().routes.len(),
            engagelab_routes = app.generation().event_routes.len(),
            "enrichd listening"
        );
        crate::app::run(public, admin, app, shutdown_signal()).await?;
        tracing::info!("enrichd stopped");
        Ok(())
    })
}

/// The config file with the command line's overrides.
fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
    let mut config = super::load_config(&args.target)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = Some(admin);
    }
    Ok(config)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
