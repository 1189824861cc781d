//! The HTTP listener: `/healthz`, `/metrics` and the `/api/v1` routes ([`crate::http::api`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

pub mod api;
#[cfg(test)]
mod tests;

use self::api::Api;
use crate::metrics::Metrics;

/// What the HTTP handlers read.
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// Set once every probe is attached: /healthz answers 200 from then on.
    pub probes_attached: AtomicBool,
    /// Optional kernel features found at start-up, reported by /healthz.
    pub kernel_features: serde_json::Value,
    /// What the integrity check found (tamper evidence), reported by /healthz.
    pub tamper: crate::tamper::TamperReports,
}

pub fn router(state: Arc<AppState>, api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route("/api/v1/workloads", get(api::list_workloads))
        .route(
            "/api/v1/workloads/{*rest}",
            get(api::get_workload).post(api::post_workload),
        )
        .route(
            "/api/v1/baselines/{*key}",
            get(api::get_baseline).put(api::put_baseline),
        )
        // A baseline file with its models' learning data can exceed axum's 2 MB default;
        // anything above the format's own limit is refused (413): a streamed body once it
        // crosses the limit, an announced one before a byte of it is read.
        .layer(axum::extract::DefaultBodyLimit::max(
            habit_profiles::baseline::MAX_FILE_BYTES,
        ))
        .layer(axum::middleware::from_fn(refuse_announced_oversize))
        .with_state(api);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(v1)
}

/// 413 for a request whose `Content-Length` is above the body limit, without reading the
/// body (axum's limit alone reads up to the limit first, then refuses).
async fn refuse_announced_oversize(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > habit_profiles::baseline::MAX_FILE_BYTES as u64) {
        let body = json!({
            "error": format!(
                "request body is larger than {} bytes",
                habit_profiles::baseline::MAX_FILE_BYTES
            )
        });
        return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
    }
    next.run(request).await
}

async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let attached = state.probes_attached.load(Ordering::Acquire);
    let status = if attached {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let tamper = state
        .tamper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // Tampering does not change the status code (see `tamper`): it is readiness.
    let text = match (attached, tamper.is_empty()) {
        (false, _) => "starting",
        (true, true) => "ok",
        (true, false) => "tampered",
    };
    let body = json!({
        "status": text,
        "probes_attached": attached,
        "kernel": state.kernel_features,
        "tamper": tamper,
    });
    (status, axum::Json(body))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Binds `addr` (failing early with a clear error) and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AppState>,
    api: Arc<Api>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let app = router(state, api);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(message = "HTTP server failed.", %e);
        }
    }))
}
