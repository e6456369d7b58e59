//! The admin listener both ends run: `/metrics` (OpenMetrics text from a
//! caller-supplied renderer), `/live`, `/ready`. Loopback by default.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;

/// Renders the metrics text on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves the admin endpoints until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, render: Render) {
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
        .route("/ready", get(|| async { "ready\n" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("admin listener: {e}");
    }
}
