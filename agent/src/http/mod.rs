//! The agent's HTTP server: `/metrics`, `/report` (JSON), `/` (HTML report),
//! `/healthz` and `/readyz`. It only renders what `drift` publishes; nothing here
//! computes a verdict.

use std::future::Future;

use tokio::net::TcpListener;

pub mod page;
mod routes;
mod state;

pub use routes::router;
pub use state::{AppState, Blockers, ReportPublisher};

/// Serves the routes on `listener` until `shutdown` completes, then finishes the
/// requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /report and the report page");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
