//! Call tabmesh services from any program, without being a peer: the client of a node's HTTP
//! gateway (the relay serves one, and so does `tabmesh-node --http`), shaped like MetaML's
//! `NodeConnection`.
//!
//! ```no_run
//! use tabmesh_client::{Message, NodeConnection};
//!
//! # async fn run() -> Result<(), tabmesh_client::ClientError> {
//! let node = NodeConnection::connect("http://127.0.0.1:8080").await?;
//! let reply = node
//!     .send(&Message::new("lucas-lehmer", "test", serde_json::json!({"exponent": 127})))
//!     .await?;
//! println!("{} answered {} via {}", reply.provider_name, reply.reply, reply.route.join(" → "));
//! # Ok(())
//! # }
//! ```
//!
//! The node the connection reaches finds a provider through the DHT, checks the message
//! against the service's declared types and forwards it; if the provider fails mid-call it
//! tries the next. Errors keep the gateway's reason ([`ClientError`]). See
//! `examples/call.rs` for a command-line program.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A message to a service: which service, which of its message types, and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The service (`lucas-lehmer`, `echo`, ...).
    pub service: String,
    /// The message type (`test`, `echo`, ...).
    pub message_type: String,
    /// The message data, which must have the shape the service declares.
    pub message_data: Value,
    /// How long the node may take, in ms (the node's default when `None`).
    pub deadline_ms: Option<u64>,
}

impl Message {
    /// A message of `message_type` to `service` carrying `data`.
    pub fn new(service: impl Into<String>, message_type: impl Into<String>, data: Value) -> Self {
        Self {
            service: service.into(),
            message_type: message_type.into(),
            message_data: data,
            deadline_ms: None,
        }
    }

    /// The same message with a deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline_ms = Some(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// The answer to a [`Message`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The reply data.
    pub reply: Value,
    /// The provider's peer id.
    pub provider: String,
    /// The provider's name.
    pub provider_name: String,
    /// The hops the call took, from this client's address to the provider.
    pub route: Vec<String>,
    /// How the node reached the provider (`local`, `direct`, `relayed`, `none`).
    pub link: String,
    /// Time the node took, ms.
    pub duration_ms: u64,
    /// Providers tried.
    pub attempts: u32,
    /// Time the provider took, ms.
    pub provider_ms: u64,
    /// The call's trace id, when the entry node traces calls (W3C trace id, hex).
    #[serde(default)]
    pub trace_id: Option<String>,
}

/// A service in the network's catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Who offers it.
    pub providers: Vec<Provider>,
}

/// A provider of a service, with its declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    /// Its peer id.
    pub peer_id: String,
    /// Its name.
    pub peer_name: String,
    /// The version it offers.
    pub version: String,
    /// What the service does, as it says.
    #[serde(default)]
    pub description: String,
    /// The message types it answers, with their request and reply shapes (JSON Schema subset).
    pub types: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct CatalogBody {
    services: Vec<Service>,
}

#[derive(Debug, Deserialize)]
struct FailureBody {
    error: String,
    message: String,
}

/// Why a call failed. Each variant but the last two is a reason the node gave.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody offers the service (404 `unknown_service`).
    #[error("{0}")]
    UnknownService(String),
    /// The service has no such message type (404 `unknown_message_type`).
    #[error("{0}")]
    UnknownMessageType(String),
    /// The data does not fit the declared shape, or the call is malformed (400).
    #[error("{0}")]
    BadData(String),
    /// Providers exist but none could be reached (503 `no_provider`).
    #[error("{0}")]
    NoProvider(String),
    /// The deadline passed (504).
    #[error("{0}")]
    TimedOut(String),
    /// The provider's handler failed (502).
    #[error("{0}")]
    Refused(String),
    /// The node is busy, or this client calls too often (429, 503 `busy`); retry later.
    #[error("{0}")]
    Busy(String),
    /// Another HTTP answer.
    #[error("HTTP {status}: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// The body or the reason.
        message: String,
    },
    /// The node could not be reached, or answered something unreadable.
    #[error("cannot reach the node: {0}")]
    Transport(#[from] reqwest::Error),
}

/// A connection to one node's gateway.
#[derive(Debug, Clone)]
pub struct NodeConnection {
    base: String,
    http: reqwest::Client,
}

impl NodeConnection {
    /// Connects to the gateway at `url` (`http://host:port`) and checks that it answers.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let connection = Self {
            base: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(130))
                .build()?,
        };
        let health = connection
            .http
            .get(format!("{}/healthz", connection.base))
            .send()
            .await?;
        if !health.status().is_success() {
            return Err(ClientError::Http {
                status: health.status().as_u16(),
                message: format!("{} is not a tabmesh node", connection.base),
            });
        }
        Ok(connection)
    }

    /// Sends `message` and waits for the reply.
    pub async fn send(&self, message: &Message) -> Result<Reply, ClientError> {
        let mut url = format!(
            "{}/api/services/{}/{}",
            self.base, message.service, message.message_type
        );
        if let Some(ms) = message.deadline_ms {
            url.push_str(&format!("?deadline_ms={ms}"));
        }
        let response = self
            .http
            .post(url)
            .json(&message.message_data)
            .send()
            .await?;
        if response.status().is_success() {
            return Ok(response.json().await?);
        }
        Err(failure(response).await)
    }

    /// Every service the network offers, with providers and message types.
    pub async fn services(&self) -> Result<Vec<Service>, ClientError> {
        let response = self
            .http
            .get(format!("{}/api/services", self.base))
            .send()
            .await?;
        if response.status().is_success() {
            return Ok(response.json::<CatalogBody>().await?.services);
        }
        Err(failure(response).await)
    }
}

async fn failure(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let Ok(body) = serde_json::from_str::<FailureBody>(&text) else {
        return ClientError::Http {
            status,
            message: text,
        };
    };
    match body.error.as_str() {
        "unknown_service" => ClientError::UnknownService(body.message),
        "unknown_message_type" => ClientError::UnknownMessageType(body.message),
        "bad_data" | "invalid" | "too_large" => ClientError::BadData(body.message),
        "no_provider" => ClientError::NoProvider(body.message),
        "timed_out" => ClientError::TimedOut(body.message),
        "refused" => ClientError::Refused(body.message),
        "busy" | "rate_limited" => ClientError::Busy(body.message),
        _ => ClientError::Http {
            status,
            message: body.message,
        },
    }
}
