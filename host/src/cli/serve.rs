//! `enrichd serve`: bind the public and admin listeners and serve until
//! Ctrl-C or SIGTERM, then drain both.

use std::sync::Arc;

use anyhow::Context;

use super::ServeArgs;

pub(super) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = super::load(&args.target)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = Some(admin);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = Arc::new(crate::app::App::build(&config).await?);
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
            routes = app.routes().len(),
            engagelab_routes = app.event_routes().len(),
            "enrichd listening"
        );
        crate::app::run(public, admin, app, shutdown_signal()).await?;
        tracing::info!("enrichd stopped");
        Ok(())
    })
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
