//! Spans to an OpenTelemetry collector (native nodes and the relay): `--otlp-endpoint`.
//!
//! Every span a peer finishes goes, besides its own store, through a bounded channel to a task
//! that batches them (up to [`BATCH`] spans, or what arrived in [`LINGER`]) and hands each batch
//! to OpenTelemetry's OTLP exporter (`opentelemetry-otlp`, HTTP with JSON bodies), so a Jaeger or
//! any collector next to the network shows the same traces the tabs draw, with the same ids.
//!
//! The spans are tabmesh's own (their ids travel in tabmesh messages), so they are converted to
//! the SDK's `SpanData` and given to the exporter directly rather than re-created through an
//! SDK tracer, which would make up its own ids. The resource names the peer: `service.name` is
//! its peer id, as in the tab's OTLP download, and `tabmesh.peer_name` its name.
//!
//! Exporting never holds up the protocols: a full channel drops the span and counts it; a
//! collector that is down costs a failed request per batch, logged once a minute at most.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::channel::mpsc;
use libp2p::PeerId;
use opentelemetry::trace::{
    Event, SpanContext, SpanId as OtelSpanId, SpanKind, Status, TraceFlags, TraceId as OtelTraceId,
    TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use tabmesh_core::names::peer_name;
use tabmesh_core::trace::assemble::KIND;
use tabmesh_core::trace::{Span, SpanStatus};

/// Spans sent in one request at most.
pub const BATCH: usize = 512;
/// How long a batch waits for more spans after its first.
pub const LINGER: Duration = Duration::from_millis(500);
/// Spans waiting for the exporter at most; more are dropped (and counted).
pub const QUEUE: usize = 8192;

/// Where a node sends its finished spans for export, and what became of them.
#[derive(Debug, Clone)]
pub struct SpanSink {
    spans: mpsc::Sender<Span>,
    counts: Arc<ExportCounts>,
}

/// What the exporter did.
#[derive(Debug, Default)]
pub struct ExportCounts {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans lost: the queue was full or the collector refused or could not be reached.
    pub dropped: AtomicU64,
}

impl SpanSink {
    /// Queues `span` for export (never waits: a full queue drops it).
    pub fn send(&self, span: Span) {
        if self.spans.clone().try_send(span).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exporter's counts.
    pub fn counts(&self) -> &ExportCounts {
        &self.counts
    }
}

/// The URL spans are posted to: `endpoint` as given when it names a path, else the OTLP/HTTP
/// traces path on it (`http://host:4318` → `http://host:4318/v1/traces`).
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let Some(rest) = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return Err(format!(
            "--otlp-endpoint {endpoint:?}: give the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318"
        ));
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("--otlp-endpoint {endpoint:?} names no host"));
    }
    Ok(if path.is_empty() {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_owned()
    })
}

/// An `--otlp-endpoint` argument, checked (for clap's `value_parser`).
pub fn endpoint_arg(endpoint: &str) -> Result<String, String> {
    traces_url(endpoint).map(|_| endpoint.to_owned())
}

/// Starts exporting the spans of `peer` to the collector at `endpoint` (see [`traces_url`]), on
/// the current Tokio runtime.
pub fn start(endpoint: &str, peer: PeerId) -> Result<SpanSink, String> {
    let url = traces_url(endpoint)?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot export to {url}: {e}"))?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(peer.to_base58())
            .with_attributes([KeyValue::new("tabmesh.peer_name", peer_name(&peer))])
            .build(),
    );
    let (spans, queue) = mpsc::channel(QUEUE);
    let counts = Arc::new(ExportCounts::default());
    tokio::spawn(run(exporter, queue, counts.clone(), url));
    Ok(SpanSink { spans, counts })
}

async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<Span>,
    counts: Arc<ExportCounts>,
    url: String,
) {
    let mut last_warning: Option<std::time::Instant> = None;
    while let Some(first) = queue.next().await {
        let mut batch = vec![span_data(&first)];
        let deadline = tokio::time::sleep(LINGER);
        tokio::pin!(deadline);
        while batch.len() < BATCH {
            tokio::select! {
                next = queue.next() => match next {
                    Some(span) => batch.push(span_data(&span)),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        let n = batch.len() as u64;
        match exporter.export(batch).await {
            Ok(()) => {
                counts.exported.fetch_add(n, Ordering::Relaxed);
                tracing::debug!(spans = n, %url, "spans exported");
            }
            Err(error) => {
                counts.dropped.fetch_add(n, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!(%url, %error, "cannot export spans to the collector (said once a minute)");
                }
            }
        }
    }
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A tabmesh span as the OpenTelemetry SDK's finished span.
pub fn span_data(span: &Span) -> SpanData {
    let kind = match span.attributes.get(KIND).map(String::as_str) {
        Some("server") => SpanKind::Server,
        Some("client") => SpanKind::Client,
        Some("producer") => SpanKind::Producer,
        Some("consumer") => SpanKind::Consumer,
        _ => SpanKind::Internal,
    };
    let status = match &span.status {
        SpanStatus::Unset => Status::Unset,
        SpanStatus::Ok => Status::Ok,
        SpanStatus::Error(why) => Status::error(why.clone()),
    };
    let mut events = SpanEvents::default();
    events.events = span
        .events
        .iter()
        .map(|e| Event::new(e.name.clone(), time(e.at_ms), Vec::new(), 0))
        .collect();
    SpanData {
        span_context: SpanContext::new(
            OtelTraceId::from_bytes(span.trace_id.0),
            OtelSpanId::from_bytes(span.span_id.0),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: span
            .parent_span_id
            .map_or(OtelSpanId::INVALID, |p| OtelSpanId::from_bytes(p.0)),
        parent_span_is_remote: false,
        span_kind: kind,
        name: Cow::Owned(span.name.clone()),
        start_time: time(span.start_ms),
        end_time: time(span.end_ms.unwrap_or(span.start_ms)),
        attributes: span
            .attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect(),
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder(tabmesh_core::trace::otlp::SCOPE)
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_gets_the_traces_path_unless_it_names_one() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector/custom/path").unwrap(),
            "http://collector/custom/path"
        );
        assert!(traces_url("127.0.0.1:4318").is_err());
        assert!(traces_url("grpc://x:4317").unwrap_err().contains("http://"));
    }
}
