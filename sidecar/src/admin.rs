//! The optional admin server (`[telemetry] admin_listen`): plain HTTP, off the gRPC path,
//! for the platform around the sidecar:
//!
//! - `GET /metrics`: Prometheus text format;
//! - `GET /healthz`: liveness, 200 while the process serves HTTP at all;
//! - `GET /readyz`: readiness, 200 until shutdown begins, then 503.
//!
//! Bind it to a private address: it has no TLS and no authentication.
use agentfleet_common::telemetry::{export::Telemetry, prometheus::CONTENT_TYPE};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Serves the admin routes on `listener` until `stop`. `shutdown` is the sidecar's own
/// shutdown token (readiness).
pub fn spawn(
    listener: tokio::net::TcpListener,
    telemetry: Option<&'static Telemetry>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin server listening (/metrics, /healthz, /readyz)");
    }
    let app = router(telemetry, shutdown);
    tokio::spawn(async move {
        // Policy on error: log it; the gRPC service goes on without the admin server.
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::warn!(error = %e, "the admin server stopped");
        }
    })
}

fn router(telemetry: Option<&'static Telemetry>, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let down = shutdown.is_cancelled();
                async move {
                    if down {
                        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                    } else {
                        (StatusCode::OK, "ready\n")
                    }
                }
            }),
        )
        .route("/metrics", get(move || metrics(telemetry)))
}

async fn metrics(telemetry: Option<&'static Telemetry>) -> axum::response::Response {
    // Collecting runs metric callbacks that read the disk: keep it off the async workers.
    let text = tokio::task::spawn_blocking(move || telemetry.and_then(Telemetry::prometheus_text))
        .await
        .ok()
        .flatten();
    match text {
        Some(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        (code, response)
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = CancellationToken::new();
        let server = spawn(listener, None, shutdown.clone(), stop.clone());
        assert_eq!(get_text(addr, "/healthz").await.0, 200);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        assert_eq!(get_text(addr, "/metrics").await.0, 404);
        shutdown.cancel();
        assert_eq!(get_text(addr, "/readyz").await.0, 503);
        stop.cancel();
        server.await.unwrap();
    }
}
