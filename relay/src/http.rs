//! The relay's HTTP side: the web app, the bootstrap document and the metrics.
//!
//! - `GET /api/bootstrap`: [`BootstrapInfo`](tabmesh_core::bootstrap::BootstrapInfo) as JSON,
//!   so a tab needs no configuration (503 until a listener is up);
//! - `GET /metrics`: Prometheus text (OpenMetrics) with libp2p's metrics and ours;
//! - `GET /healthz`: `ok`;
//! - `/api/services`: the services gateway ([`tabmesh_gateway`]);
//! - `GET /api/traces/{trace_id}`: the trace gathered from the peers it crossed, starting from
//!   the relay's own spans (the calls that came in over HTTP): `{trace_id, spans, peers, missing,
//!   offsets_ms, refused}`, or with `?format=otlp` as OTLP/JSON; 400 for a malformed id;
//! - everything else: files of the built web app, with `index.html` for unknown paths (gzipped
//!   when the build left a `.gz` beside the file and the browser accepts gzip; revalidated at
//!   every load), or a page that says how to build the app when it is missing.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::channel::{mpsc, oneshot};
use tabmesh_core::trace::TraceId;
use tabmesh_node::trace::TraceCommand;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeader;

use crate::network::SharedState;

/// The HTTP routes.
pub fn router(
    shared: Arc<SharedState>,
    web_dir: PathBuf,
    gateway: Router,
    traces: mpsc::Sender<TraceCommand>,
) -> Router {
    let api = Router::new()
        .route("/api/bootstrap", get(bootstrap))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
        .merge(
            Router::new()
                .route("/api/traces/{trace_id}", get(trace))
                .with_state(traces),
        )
        .merge(gateway);
    let index = web_dir.join("index.html");
    if index.is_file() {
        // Gzipped where the build wrote a `.gz` beside a file (`cargo xtask build-web` does for
        // every one) and the browser accepts it. Browsers revalidate each file at every load
        // (a 304 when unchanged): the names carry no hash, so a rebuilt app must never be
        // mixed with a cached part of the old one.
        let files = ServeDir::new(&web_dir)
            .precompressed_gzip()
            .fallback(ServeFile::new(index).precompressed_gzip());
        // Caches between the relay and the browser (a proxy) must keep the two apart.
        let files = SetResponseHeader::if_not_present(
            files,
            header::VARY,
            HeaderValue::from_static("accept-encoding"),
        );
        api.fallback_service(SetResponseHeader::overriding(
            files,
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
    } else {
        tracing::warn!(dir = %web_dir.display(), "no built web app found; serving a notice at /");
        let notice = missing_app_notice(&web_dir);
        api.fallback(move || {
            let notice = notice.clone();
            async move { (StatusCode::SERVICE_UNAVAILABLE, Html(notice)) }
        })
    }
}

#[derive(serde::Deserialize)]
struct TraceQuery {
    format: Option<String>,
}

async fn trace(
    State(traces): State<mpsc::Sender<TraceCommand>>,
    Path(trace_id): Path<String>,
    Query(query): Query<TraceQuery>,
) -> Response {
    let bad = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid", "message": message})),
        )
            .into_response()
    };
    let otlp = match query.format.as_deref() {
        None | Some("json") => false,
        Some("otlp") => true,
        Some(other) => return bad(format!("format {other:?}: use json or otlp")),
    };
    let trace_id = match TraceId::parse(&trace_id) {
        Ok(id) => id,
        Err(e) => return bad(format!("trace id: {e}")),
    };
    let (reply, answer) = oneshot::channel();
    if traces
        .clone()
        .try_send(TraceCommand::Gather { trace_id, reply })
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many trace requests; try again",
        )
            .into_response();
    }
    match answer.await {
        Ok(Ok(trace)) if otlp => axum::Json(tabmesh_core::trace::otlp::export(
            trace.spans.iter().map(|p| &p.span),
        ))
        .into_response(),
        Ok(Ok(trace)) => axum::Json(trace).into_response(),
        Ok(Err(why)) => (StatusCode::BAD_GATEWAY, why).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the relay is stopping").into_response(),
    }
}

async fn bootstrap(State(shared): State<Arc<SharedState>>) -> Response {
    let doc = match shared.bootstrap.read() {
        Ok(doc) => doc.clone(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if doc.addrs.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "relay listeners are not up yet",
        )
            .into_response();
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(doc)).into_response()
}

async fn metrics(State(shared): State<Arc<SharedState>>) -> Response {
    let mut body = String::new();
    let encoded = match shared.registry.lock() {
        Ok(registry) => prometheus_client::encoding::text::encode(&mut body, &registry),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if encoded.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn missing_app_notice(web_dir: &std::path::Path) -> String {
    format!(
        "<!doctype html><title>tabmesh relay</title><h1>tabmesh relay is running</h1>\
         <p>The web app is not built: no <code>index.html</code> in <code>{}</code>.</p>\
         <p>Run <code>cargo xtask demo</code> (or <code>cargo xtask build-web</code>) in the \
         tabmesh checkout, or point <code>--web-dir</code> at a built app.</p>\
         <p>The bootstrap document is at <a href=\"/api/bootstrap\">/api/bootstrap</a>.</p>",
        web_dir.display()
    )
}
