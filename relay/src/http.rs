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
//!   when the build left a `.gz` beside the file, the browser accepts gzip and [`Gzip`] says so;
//!   revalidated at every load), or a page that says how to build the app when it is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::channel::{mpsc, oneshot};
use tabmesh_core::trace::TraceId;
use tabmesh_node::trace::TraceCommand;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeader;

use crate::config::Gzip;
use crate::network::SharedState;

/// The HTTP routes.
pub fn router(
    shared: Arc<SharedState>,
    web_dir: PathBuf,
    gzip: Gzip,
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
        api.fallback_service(app_files(&web_dir, gzip))
    } else {
        tracing::warn!(dir = %web_dir.display(), "no built web app found; serving a notice at /");
        let notice = missing_app_notice(&web_dir);
        api.fallback(move || {
            let notice = notice.clone();
            async move { (StatusCode::SERVICE_UNAVAILABLE, Html(notice)) }
        })
    }
}

/// The built web app in `web_dir` (which has an `index.html`), for the paths no route takes.
fn app_files(web_dir: &std::path::Path, gzip: Gzip) -> Router {
    let index = web_dir.join("index.html");
    // Gzipped where the build wrote a `.gz` beside a file (`cargo xtask build-web` does for
    // every one), the browser accepts it and the policy allows. Browsers revalidate each
    // file at every load (a 304 when unchanged): the names carry no hash, so a rebuilt app
    // must never be mixed with a cached part of the old one.
    let (files, page) = match gzip {
        Gzip::Never => (ServeDir::new(web_dir), ServeFile::new(index)),
        Gzip::Auto | Gzip::Always => (
            ServeDir::new(web_dir).precompressed_gzip(),
            ServeFile::new(index).precompressed_gzip(),
        ),
    };
    // Caches between the relay and the browser (a proxy) must keep the two apart.
    let files = SetResponseHeader::if_not_present(
        files.fallback(page),
        header::VARY,
        HeaderValue::from_static("accept-encoding"),
    );
    let files = Router::new().fallback_service(SetResponseHeader::overriding(
        files,
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    ));
    match gzip {
        Gzip::Auto => files.layer(middleware::from_fn(uncompressed_on_loopback)),
        Gzip::Always | Gzip::Never => files,
    }
}

/// Serves a browser on this machine the files as they are, whatever it accepts: over loopback
/// gzip saves no transfer and costs every tab an inflate of the module before it runs (with 8
/// tabs opened together each tab's app ran 50–80 ms later gzipped). A request forwarded by a
/// proxy on this machine (`Forwarded` or `X-Forwarded-For`, as Caddy and most proxies add)
/// comes from elsewhere; a client that forges the header only gets what it accepts.
async fn uncompressed_on_loopback(mut request: Request, next: Next) -> Response {
    let loopback = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(client)| client.ip().to_canonical().is_loopback());
    let headers = request.headers();
    let forwarded =
        headers.contains_key(header::FORWARDED) || headers.contains_key("x-forwarded-for");
    if loopback && !forwarded {
        request.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    next.run(request).await
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tower::ServiceExt;

    use super::*;

    /// A built app: a page and a module, each with its `.gz`.
    fn built_app(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tabmesh-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, bytes) in [
            (
                "index.html",
                b"<!doctype html><title>tabmesh</title>".repeat(20),
            ),
            (
                "app_bg.wasm",
                (0..50_000u32).map(|i| (i % 251) as u8).collect(),
            ),
        ] {
            std::fs::write(dir.join(file), &bytes).unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&bytes).unwrap();
            std::fs::write(dir.join(format!("{file}.gz")), gz.finish().unwrap()).unwrap();
        }
        dir
    }

    /// The `Content-Encoding` of `path` fetched by a browser at `client` that accepts gzip.
    async fn encoding(app: &Router, client: &str, path: &str) -> String {
        forwarded_encoding(app, client, path, None).await
    }

    /// The same, through a proxy that added `header`.
    async fn forwarded_encoding(
        app: &Router,
        client: &str,
        path: &str,
        forwarded: Option<(&str, &str)>,
    ) -> String {
        let mut request = axum::http::Request::builder()
            .uri(path)
            .header(header::ACCEPT_ENCODING, "gzip, deflate");
        if let Some((name, value)) = forwarded {
            request = request.header(name, value);
        }
        let mut request = request.body(axum::body::Body::empty()).unwrap();
        let client: SocketAddr = client.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(client));
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path} for {client}");
        let encoding = response.headers().get(header::CONTENT_ENCODING);
        encoding.map_or("", |v| v.to_str().unwrap()).to_owned()
    }

    #[tokio::test]
    async fn browsers_on_this_machine_get_the_files_as_they_are_unless_told_otherwise() {
        let dir = built_app("gzip-policy");
        let auto = app_files(&dir, Gzip::Auto);
        for local in [
            "127.0.0.1:50000",
            "127.8.0.1:50000",
            "[::1]:50000",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(encoding(&auto, local, "/app_bg.wasm").await, "", "{local}");
            assert_eq!(encoding(&auto, local, "/some/route").await, "", "{local}");
        }
        for remote in ["192.0.2.7:50000", "10.0.0.2:1", "[2001:db8::1]:50000"] {
            assert_eq!(
                encoding(&auto, remote, "/app_bg.wasm").await,
                "gzip",
                "{remote}"
            );
            assert_eq!(
                encoding(&auto, remote, "/some/route").await,
                "gzip",
                "{remote}"
            );
        }
        // A proxy on this machine (TLS in front of the relay) forwards browsers from elsewhere.
        for header in [
            ("x-forwarded-for", "198.51.100.4"),
            ("forwarded", "for=198.51.100.4;proto=https"),
        ] {
            let through_proxy =
                forwarded_encoding(&auto, "127.0.0.1:50000", "/app_bg.wasm", Some(header));
            assert_eq!(through_proxy.await, "gzip", "{header:?}");
        }
        let always = app_files(&dir, Gzip::Always);
        assert_eq!(
            encoding(&always, "127.0.0.1:50000", "/app_bg.wasm").await,
            "gzip"
        );
        let never = app_files(&dir, Gzip::Never);
        assert_eq!(
            encoding(&never, "192.0.2.7:50000", "/app_bg.wasm").await,
            ""
        );
        assert_eq!(encoding(&never, "192.0.2.7:50000", "/some/route").await, "");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
