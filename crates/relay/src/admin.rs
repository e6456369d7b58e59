//! The admin listener both ends run: `/metrics` (OpenMetrics text from a
//! caller-supplied renderer), `/live` (the process answers), `/ready` (200
//! while the caller's readiness check holds, 503 otherwise, e.g. while a
//! HAG drains, so a load balancer stops sending it new subscribers).
//! Loopback by default.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// Renders the metrics text on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Says whether the service takes new work.
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves the admin endpoints until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, render: Render, ready: Ready) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let r = render.clone();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        r(),
                    )
                }
            }),
        )
        .route("/live", get(|| async { "live\n" }))
        .route(
            "/ready",
            get(move || {
                let ok = ready();
                async move {
                    if ok {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("admin listener: {e}");
    }
}
