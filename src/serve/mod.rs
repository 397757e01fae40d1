//! `ft serve`: an OpenAI-compatible HTTP server (`/v1/models`, `/v1/chat/completions`,
//! `/v1/completions`, `/health`, and a chat page at `/`).
//!
//! Two layers (DESIGN.md §8): the handlers here only translate JSON to a [`GenRequest`] and send
//! it to a [`Backend`]; the runner that owns the model decodes and answers with [`GenEvent`]s on a
//! channel. Nothing in this module touches a tensor, so it is tested with a fake backend.

pub mod api;
mod backend;
mod completion;
mod http;
pub mod response;
pub mod runner;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

pub use backend::{
    Backend, CancelToken, FinishReason, GenEvent, GenRequest, ModelCard, Prompt, ServeError,
};
pub use http::router;

/// Server settings; the CLI fills these from flags.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Generations the runner decodes at once.
    pub parallel: usize,
    /// Requests that may wait for a free slot; beyond `parallel + queue`, new ones get 503.
    pub queue: usize,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Chat `max_tokens` when the request gives none (capped at the context length).
    pub default_max_tokens: usize,
    /// After Ctrl-C/SIGTERM, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            parallel: 1,
            queue: 16,
            max_body_bytes: 1 << 20,
            default_max_tokens: 2048,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Bind `cfg.host:cfg.port` and serve until Ctrl-C or SIGTERM, then drain in-flight requests.
pub async fn serve(cfg: ServeConfig, backend: Arc<dyn Backend>) -> crate::Result<()> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| crate::Error::io(&addr, e).context("cannot listen"))?;
    let local = listener
        .local_addr()
        .map_err(|e| crate::Error::io(&addr, e))?;
    if cfg.api_key.is_none() && !local.ip().is_loopback() {
        eprintln!(
            "warning: listening on {local} without --api-key: \
             anyone who can reach this port can use the model"
        );
    }
    eprintln!("ft serve: listening on http://{local} (OpenAI base URL: http://{local}/v1)");
    serve_on(listener, cfg, backend, shutdown_signal()).await
}

/// Serve on an already bound listener until `shutdown` completes; then stop accepting and give
/// in-flight requests `cfg.shutdown_grace` to finish (a second Ctrl-C stops at once).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    cfg: ServeConfig,
    backend: Arc<dyn Backend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let grace = cfg.shutdown_grace;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(cfg, backend)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let deadline = async move {
        if stopping_rx.await.is_err() {
            // The server ended on its own; let the other branch report it.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::select! {
        r = server.into_future() => r.map_err(|e| crate::Error::io(&addr, e).context("serving")),
        _ = deadline => {
            eprintln!("ft serve: stopping with requests still running");
            Ok(())
        }
    }
}

/// Ctrl-C, or SIGTERM (what `docker stop` and systemd send).
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
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("ft serve: shutting down, finishing in-flight requests (Ctrl-C again to stop now)");
}
