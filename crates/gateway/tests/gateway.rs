//! The gateway over real HTTP, in front of a stand-in node that answers its commands: the
//! status code and `error` of every outcome, and each limit (body size, rate per IP, calls in
//! progress, the catalog cache).
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tabmesh_core::services::{CallError, Catalog, Link};
use tabmesh_gateway::GatewayConfig;
use tabmesh_node::services::{CallAnswer, ServiceCommand};
use tokio::sync::Notify;

/// A node that answers by service name: `echo` with the data, `hold` once `release` is
/// notified, and the others with the error their name says. Counts catalog requests.
fn stand_in_node(release: Arc<Notify>, catalogs: Arc<AtomicUsize>) -> mpsc::Sender<ServiceCommand> {
    let (tx, mut rx) = mpsc::channel::<ServiceCommand>(16);
    tokio::spawn(async move {
        while let Some(command) = rx.next().await {
            match command {
                ServiceCommand::Call(request, reply) => {
                    let release = release.clone();
                    tokio::spawn(async move {
                        let result = match request.service.as_str() {
                            "echo" | "hold" => {
                                if request.service == "hold" {
                                    release.notified().await;
                                }
                                Ok(CallAnswer {
                                    reply: request.data.clone(),
                                    trace_id: None,
                                    provider: "12D3KooWprovider".into(),
                                    provider_name: "amber-heron".into(),
                                    route: vec![request.origin.clone().unwrap_or_default()],
                                    link: Link::Direct,
                                    duration_ms: 1,
                                    attempts: 1,
                                    provider_ms: 0,
                                })
                            }
                            "bad-data" => Err(CallError::BadData("/a: expected integer".into())),
                            "unknown-type" => {
                                Err(CallError::UnknownType("unknown message type \"x\"".into()))
                            }
                            "nothing" => Err(CallError::NotOffered {
                                service: "nothing".into(),
                            }),
                            "gone" => Err(CallError::NoProvider {
                                service: "gone".into(),
                                tried: vec!["a: unreachable".into()],
                            }),
                            "slow" => Err(CallError::TimedOut {
                                ms: 10,
                                waiting: "waiting for a provider to answer (direct)".into(),
                            }),
                            "fails" => Err(CallError::Refused("division by zero".into())),
                            _ => Err(CallError::Invalid("no such test service".into())),
                        };
                        let _ = reply.send(result);
                    });
                }
                ServiceCommand::Catalog(reply) => {
                    catalogs.fetch_add(1, Ordering::SeqCst);
                    let _ = reply.send(Ok(Catalog::default()));
                }
                _ => {}
            }
        }
    });
    tx
}

struct Served {
    url: String,
    release: Arc<Notify>,
    catalogs: Arc<AtomicUsize>,
}

async fn serve(config: GatewayConfig) -> Served {
    let release = Arc::new(Notify::new());
    let catalogs = Arc::new(AtomicUsize::new(0));
    let app = tabmesh_gateway::router(stand_in_node(release.clone(), catalogs.clone()), &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Served {
        url,
        release,
        catalogs,
    }
}

async fn post(url: &str, body: &str) -> (u16, Value, Option<String>) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry)
}

#[tokio::test]
async fn every_outcome_has_its_status_and_code() {
    let served = serve(GatewayConfig::default()).await;
    let (status, body, _) = post(
        &format!("{}/api/services/echo/echo", served.url),
        r#"{"hi": 1}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["reply"], json!({"hi": 1}));
    assert_eq!(
        body["route"],
        json!(["http 127.0.0.1"]),
        "the client is the call's origin"
    );
    for (service, status, code) in [
        ("bad-data", 400, "bad_data"),
        ("unknown-type", 404, "unknown_message_type"),
        ("nothing", 404, "unknown_service"),
        ("gone", 503, "no_provider"),
        ("slow", 504, "timed_out"),
        ("fails", 502, "refused"),
    ] {
        let (got, body, _) = post(&format!("{}/api/services/{service}/x", served.url), "{}").await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{service}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, body, _) = post(
        &format!("{}/api/services/echo/echo", served.url),
        "{not json",
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid")));
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_unread() {
    let served = serve(GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    })
    .await;
    let big = json!({"x": "y".repeat(2000)}).to_string();
    let (status, _, _) = post(&format!("{}/api/services/echo/echo", served.url), &big).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_when_to_come_back() {
    let served = serve(GatewayConfig {
        rate_per_ip: NonZeroU32::new(1).unwrap(),
        burst_per_ip: NonZeroU32::new(2).unwrap(),
        ..GatewayConfig::default()
    })
    .await;
    let url = format!("{}/api/services/echo/echo", served.url);
    assert_eq!(post(&url, "{}").await.0, 200);
    assert_eq!(post(&url, "{}").await.0, 200);
    let (status, body, retry) = post(&url, "{}").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(retry.as_deref(), Some("1"));
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_are_busy_not_queued() {
    let served = serve(GatewayConfig {
        max_concurrent: 1,
        ..GatewayConfig::default()
    })
    .await;
    let hold = format!("{}/api/services/hold/x", served.url);
    let first = tokio::spawn(async move { post(&hold, r#"{"n": 1}"#).await });
    // Wait until the first call holds the only slot.
    let echo = format!("{}/api/services/echo/echo", served.url);
    let mut busy = None;
    for _ in 0..100 {
        let (status, body, _) = post(&echo, "{}").await;
        if status == 503 {
            busy = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(busy.unwrap()["error"], json!("busy"));
    served.release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(post(&echo, "{}").await.0, 200, "the slot is free again");
}

#[tokio::test]
async fn the_catalog_is_reused_briefly() {
    let served = serve(GatewayConfig {
        catalog_cache: Duration::from_secs(60),
        ..GatewayConfig::default()
    })
    .await;
    for _ in 0..3 {
        let response = reqwest::get(format!("{}/api/services", served.url))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(served.catalogs.load(Ordering::SeqCst), 1);
}
