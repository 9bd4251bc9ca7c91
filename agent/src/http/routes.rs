//! Route handlers. Each one reads the shared state and renders; none blocks on
//! the pipeline.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::auth::{KubeGate, require_kubernetes_auth};
use super::page;
use super::state::AppState;
use crate::export::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};

/// The application's routes, for [`serve`](super::serve) or for embedding.
/// With a `gate`, the report page, `/report` and `/metrics` answer only
/// callers the API server authenticates and allows; `/healthz` and
/// `/readyz` stay open for the kubelet's probes.
pub fn router(state: AppState, gate: Option<KubeGate>) -> Router {
    let protected = Router::new()
        .route("/", get(report_page))
        .route("/report", get(report_json))
        .route("/metrics", get(metrics));
    let protected = match gate {
        Some(gate) => protected.route_layer(axum::middleware::from_fn_with_state(
            gate,
            require_kubernetes_auth,
        )),
        None => protected,
    };
    protected
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// Report data changes every refresh; a cached copy would show stale verdicts.
const NO_STORE: (header::HeaderName, HeaderValue) =
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));

async fn report_page(State(state): State<AppState>) -> Response {
    let report = state.latest();
    ([NO_STORE], Html(page::render(&report))).into_response()
}

async fn report_json(State(state): State<AppState>) -> Response {
    let report = state.latest();
    match serde_json::to_vec_pretty(&*report) {
        Ok(body) => (
            [
                NO_STORE,
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "serializing the report failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "serializing the report failed\n",
            )
                .into_response()
        }
    }
}

/// OpenMetrics unless the client asks for the Prometheus text format only:
/// Prometheus asks for OpenMetrics first, `promtool check metrics` needs text
/// (`curl -H 'Accept: text/plain' …/metrics | promtool check metrics`).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (content_type, body) = if wants_prometheus_text(&headers) {
        (
            PROMETHEUS_TEXT_CONTENT_TYPE,
            state.metrics.encode_prometheus_text(),
        )
    } else {
        (OPENMETRICS_CONTENT_TYPE, state.metrics.encode())
    };
    (
        [
            NO_STORE,
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        ],
        body,
    )
        .into_response()
}

fn wants_prometheus_text(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let accept = accept.join(",");
    accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    if state.is_ready() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let blockers = state.blockers.now();
    let body = if blockers.is_empty() {
        "not ready: the inventory is not loaded or the probe is not attached yet\n".to_owned()
    } else {
        let mut body = String::from("not ready: the inventory cannot be loaded:\n");
        for blocker in blockers {
            body.push_str("- ");
            body.push_str(&blocker);
            body.push('\n');
        }
        body
    };
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found; meshdrift serves / (report page), /report (JSON), /metrics, /healthz, /readyz\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn prometheus_scrape_accept_header_gets_openmetrics() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(!wants_prometheus_text(&accept(prometheus)));
    }

    #[test]
    fn plain_text_only_clients_get_the_text_format() {
        assert!(wants_prometheus_text(&accept("text/plain")));
        assert!(!wants_prometheus_text(&accept("*/*")));
        assert!(!wants_prometheus_text(&HeaderMap::new()));
    }
}
