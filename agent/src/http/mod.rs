//! The agent's HTTP server: `/metrics`, `/report` (JSON), `/` (HTML report),
//! `/healthz` and `/readyz`, over HTTP or HTTPS, optionally behind the
//! cluster's authentication ([`auth`]). It only renders what `drift`
//! publishes; nothing here computes a verdict.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

pub mod auth;
pub mod page;
mod routes;
mod state;

pub use routes::router;
pub use state::{AppState, Blockers, ReportPublisher};

/// How long requests in flight may finish once the agent stops.
const DRAIN: Duration = Duration::from_secs(5);

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How the routes are served beyond plain HTTP to anyone.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Authorises the report and the metrics with the API server.
    pub gate: Option<auth::KubeGate>,
    /// Serve HTTPS with this certificate, loaded once at start.
    pub tls: Option<axum_server::tls_rustls::RustlsConfig>,
}

/// Loads a certificate and key for HTTPS, naming the files on failure.
pub async fn load_tls(files: &TlsFiles) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot serve HTTPS with certificate {} and key {}: {err}",
                files.cert.display(),
                files.key.display()
            )
        })
}

/// Serves the routes on `listener` until `shutdown` completes, then finishes the
/// requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            scheme,
            auth = options.gate.is_some(),
            "serving /metrics, /report and the report page"
        );
    }
    let app = router(state, options.gate);
    match options.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(DRAIN));
            });
            axum_server::from_tcp_rustls(listener.into_std()?, config)?
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
    }
}
