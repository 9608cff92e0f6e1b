//! HTTP entry to tabmesh services, for clients that are not peers (MetaML's `NodeConnection`).
//!
//! The relay serves these routes, and so does a native node started with `--http`:
//!
//! - `POST /api/services/{service}/{type}` with the message data as a JSON body (and an
//!   optional `?deadline_ms=`): the node routes the call into the mesh like one of its own
//!   (providers from the DHT, the descriptor check, failover) and answers with
//!   `{reply, trace_id, provider, provider_name, route, link, duration_ms, attempts,
//!   provider_ms}` (the relay gathers the call's trace at `GET /api/traces/{trace_id}`);
//! - `GET /api/services`: every service the DHT knows, with its providers and message types.
//!
//! A failed call answers `{error, message}`: `error` is a stable code, the HTTP status says
//! what failed:
//!
//! | status | `error` | meaning |
//! | --- | --- | --- |
//! | 400 | `bad_data`, `invalid` | the data does not fit the declared shape; a bad name or body |
//! | 404 | `unknown_service`, `unknown_message_type` | nobody offers it; the service has no such type |
//! | 413 | | the body is over the limit |
//! | 429 | `rate_limited` | too many calls from this address (`Retry-After` says when to retry) |
//! | 502 | `refused` | the provider's handler failed |
//! | 503 | `no_provider`, `busy` | no provider could be reached; too many calls in progress |
//! | 504 | `timed_out` | the deadline passed |
//!
//! Limits ([`GatewayConfig`]): body size, calls per second per client IP (a token bucket,
//! [`governor`]), calls in progress at once; the catalog is cached briefly so that a busy
//! client cannot turn every `GET` into DHT lookups.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::channel::{mpsc, oneshot};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Value, json};
use tabmesh_core::services::{CallError, CallRequest, Catalog};
use tabmesh_node::services::ServiceCommand;
use tokio::sync::Semaphore;

/// The gateway's limits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Calls per second per client IP (sustained).
    pub rate_per_ip: NonZeroU32,
    /// Calls a client IP may make in a burst.
    pub burst_per_ip: NonZeroU32,
    /// Calls in progress at once, over all clients.
    pub max_concurrent: usize,
    /// How long a catalog is reused.
    pub catalog_cache: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024,
            rate_per_ip: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            burst_per_ip: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            max_concurrent: 64,
            catalog_cache: Duration::from_secs(2),
        }
    }
}

/// The gateway's limits on the command line (flattened into the relay's and the node's).
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Service calls per second each client IP may make through the HTTP gateway (sustained).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_rate_per_ip: u32,

    /// Service calls a client IP may make through the gateway in a burst.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_burst_per_ip: u32,

    /// Service calls in progress through the gateway at once (all clients).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub gateway_max_concurrent: u64,

    /// Largest body of a service call through the gateway, in bytes.
    #[arg(long, default_value_t = 32 * 1024, value_parser = clap::value_parser!(u64).range(2..=65536))]
    pub gateway_max_body_bytes: u64,
}

impl GatewayArgs {
    /// The limits these arguments set.
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig {
            max_body_bytes: usize::try_from(self.gateway_max_body_bytes).unwrap_or(usize::MAX),
            rate_per_ip: NonZeroU32::new(self.gateway_rate_per_ip).unwrap_or(NonZeroU32::MIN),
            burst_per_ip: NonZeroU32::new(self.gateway_burst_per_ip).unwrap_or(NonZeroU32::MIN),
            max_concurrent: usize::try_from(self.gateway_max_concurrent).unwrap_or(usize::MAX),
            ..GatewayConfig::default()
        }
    }
}

/// How the gateway reaches its node: the node's service commands.
pub type Commands = mpsc::Sender<ServiceCommand>;

struct Gateway {
    commands: Commands,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    in_progress: Semaphore,
    max_concurrent: usize,
    catalog_cache: Duration,
    catalog: Mutex<Option<(Instant, Catalog)>>,
}

/// The gateway's routes, calling services through `commands`. Serve them with
/// `into_make_service_with_connect_info::<SocketAddr>()` (the rate limit is per client IP).
pub fn router(commands: Commands, config: &GatewayConfig) -> Router {
    let quota = Quota::per_second(config.rate_per_ip).allow_burst(config.burst_per_ip);
    let gateway = Arc::new(Gateway {
        commands,
        limiter: RateLimiter::keyed(quota),
        in_progress: Semaphore::new(config.max_concurrent),
        max_concurrent: config.max_concurrent,
        catalog_cache: config.catalog_cache,
        catalog: Mutex::new(None),
    });
    let cleanup = Arc::downgrade(&gateway);
    tokio::spawn(async move {
        // Forget idle clients now and then, so the limiter's table stays small.
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match cleanup.upgrade() {
                Some(g) => g.limiter.retain_recent(),
                None => break,
            }
        }
    });
    Router::new()
        .route("/api/services", get(catalog))
        .route("/api/services/{service}/{message_type}", post(call))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(gateway)
}

/// The JSON of a failure.
fn failure(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

fn call_failure(error: &CallError) -> Response {
    let status = match error {
        CallError::BadData(_) | CallError::Invalid(_) => StatusCode::BAD_REQUEST,
        CallError::NotOffered { .. } | CallError::UnknownType(_) => StatusCode::NOT_FOUND,
        CallError::Refused(_) => StatusCode::BAD_GATEWAY,
        CallError::NoProvider { .. } | CallError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        CallError::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
    };
    failure(status, error.code(), error.to_string())
}

#[derive(Debug, Deserialize)]
struct CallParams {
    deadline_ms: Option<u64>,
}

impl Gateway {
    fn admit(&self, ip: IpAddr) -> Result<tokio::sync::SemaphorePermit<'_>, Box<Response>> {
        if let Err(not_until) = self.limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut response = failure(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many calls from {ip}; retry in {} ms", wait.as_millis()),
            );
            let secs = wait.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            tracing::debug!(%ip, "gateway call rate-limited");
            return Err(Box::new(response));
        }
        self.in_progress.try_acquire().map_err(|_| {
            Box::new(failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "{} calls in progress; try again shortly",
                    self.max_concurrent
                ),
            ))
        })
    }

    fn submit(&self, command: ServiceCommand) -> Result<(), Box<Response>> {
        self.commands.clone().try_send(command).map_err(|e| {
            let message = if e.is_disconnected() {
                "the node has stopped"
            } else {
                "the node is not keeping up; try again shortly"
            };
            Box::new(failure(StatusCode::SERVICE_UNAVAILABLE, "busy", message))
        })
    }
}

async fn call(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path((service, message_type)): Path<(String, String)>,
    Query(params): Query<CallParams>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let permit = match gateway.admit(client.ip()) {
        Ok(permit) => permit,
        Err(response) => return *response,
    };
    let data = match body {
        Ok(Json(data)) => data,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return failure(rejection.status(), "too_large", rejection.body_text());
        }
        Err(rejection) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the body must be JSON: {}", rejection.body_text()),
            );
        }
    };
    let request = CallRequest {
        service,
        message_type,
        data,
        deadline_ms: params.deadline_ms,
        origin: Some(format!("http {}", client.ip())),
    };
    let (tx, rx) = oneshot::channel();
    if let Err(response) = gateway.submit(ServiceCommand::Call(request, tx)) {
        return *response;
    }
    let answer = rx.await;
    drop(permit);
    match answer {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(error)) => call_failure(&error),
        Err(_) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the node has stopped",
        ),
    }
}

async fn catalog(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
) -> Response {
    if let Ok(cached) = gateway.catalog.lock()
        && let Some((at, catalog)) = cached.as_ref()
        && at.elapsed() < gateway.catalog_cache
    {
        return Json(catalog.clone()).into_response();
    }
    let permit = match gateway.admit(client.ip()) {
        Ok(permit) => permit,
        Err(response) => return *response,
    };
    let (tx, rx) = oneshot::channel();
    if let Err(response) = gateway.submit(ServiceCommand::Catalog(tx)) {
        return *response;
    }
    let result = rx.await;
    drop(permit);
    match result {
        Ok(Ok(catalog)) => {
            if let Ok(mut cached) = gateway.catalog.lock() {
                *cached = Some((Instant::now(), catalog.clone()));
            }
            Json(catalog).into_response()
        }
        Ok(Err(why)) => failure(StatusCode::SERVICE_UNAVAILABLE, "no_provider", why),
        Err(_) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the node has stopped",
        ),
    }
}
