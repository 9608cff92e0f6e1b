//! The tabmesh DHT: libp2p Kademlia (protocol `/tabmesh/kad/1.0.0`) with signed records,
//! quotas and a visible lookup path.
//!
//! Kademlia itself (routing table, iterative lookups, `PUT_VALUE`/`GET_VALUE`/`ADD_PROVIDER`/
//! `GET_PROVIDERS`, periodic replication and republication) is libp2p's; this module holds the
//! rules tabmesh adds, free of I/O and clocks:
//!
//! - [`key`]: the Kademlia key of a user's key (`color` is stored under `/tabmesh/color`, the
//!   namespace js-libp2p and go-libp2p peers validate), and the old keys read until they expire;
//! - [`record`]: the signed record envelope, its limits and the precedence rule (a key belongs
//!   to the publisher of its live record; remove is a signed tombstone);
//! - [`store`]: a peer's local share (records and provider records) with per-publisher and
//!   per-provider quotas, emitting changes for persistence;
//! - [`lookup`]: the path of one iterative lookup (who was asked, in which round, how long each
//!   took), as the UI draws it and the simulation counts it;
//! - [`ops`]: a user's request (put, get, remove, provide, providers) as a state machine over
//!   Kademlia queries, with the rules tabmesh adds: quorum, ownership, versions, tombstones,
//!   provider acknowledgements, hand-over to joining peers.
//!
//! The requests a user makes ([`DhtRequest`]) and their answers ([`DhtReply`]) are shared by the
//! UI, `window.tabmesh`, the native node's command line and the simulation.

pub mod key;
pub mod lookup;
pub mod ops;
pub mod record;
pub mod store;

use serde::{Deserialize, Serialize};
use web_time::Duration;

use crate::peers::millis;
use lookup::LookupView;
use store::StoreLimits;

/// How the DHT replicates, republishes and expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtConfig {
    /// Peers that store each record and provider record (Kademlia's k).
    pub replication_factor: usize,
    /// Every holder re-stores the records it holds at the k closest peers this often, so that
    /// records outlive the peers that stored them and reach peers that joined since.
    pub replication_interval: Duration,
    /// The publisher re-stores its own records this often (their expiry does not move).
    pub publication_interval: Duration,
    /// Lifetime of a provider record.
    pub provider_ttl: Duration,
    /// Providers re-announce this often.
    pub provider_publication_interval: Duration,
    /// A lookup gives up after this long.
    pub query_timeout: Duration,
    /// A user's request is answered within this long whatever the network does (a put is up
    /// to four lookups in a row): with what it has by then (a copy found, peers that stored the
    /// record), or with the reason ([`DhtError::TimedOut`]).
    pub op_timeout: Duration,
    /// How often the peer refreshes its routing table with a lookup of its own id (`None`: never,
    /// as on the relay, which is the bootstrap node).
    pub periodic_bootstrap: Option<Duration>,
    /// Copies of a record a get waits for before answering (it answers earlier when the lookup
    /// ends); the best copy by the precedence rule wins.
    pub get_quorum: usize,
    /// Store limits and quotas.
    pub limits: StoreLimits,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            replication_factor: 20,
            replication_interval: Duration::from_secs(120),
            publication_interval: Duration::from_secs(300),
            provider_ttl: Duration::from_secs(600),
            provider_publication_interval: Duration::from_secs(240),
            query_timeout: Duration::from_secs(20),
            op_timeout: Duration::from_secs(30),
            periodic_bootstrap: Some(Duration::from_secs(300)),
            get_quorum: 3,
            limits: StoreLimits::default(),
        }
    }
}

/// What a user asks of the DHT (keys and values are text at every interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DhtRequest {
    /// Store `value` under `key` for `ttl_ms` (default: the configured record lifetime).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Lifetime in ms.
        #[serde(default)]
        ttl_ms: Option<u64>,
    },
    /// Find the value under `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Remove our record under `key` (a signed tombstone replaces it everywhere it is stored).
    Remove {
        /// The key.
        key: String,
    },
    /// Announce that we provide `key`.
    Provide {
        /// The key.
        key: String,
    },
    /// Find who provides `key`.
    Providers {
        /// The key.
        key: String,
    },
}

impl DhtRequest {
    /// The operation's name, as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Put { .. } => "put",
            Self::Get { .. } => "get",
            Self::Remove { .. } => "remove",
            Self::Provide { .. } => "provide",
            Self::Providers { .. } => "providers",
        }
    }

    /// The key the request is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. }
            | Self::Get { key }
            | Self::Remove { key }
            | Self::Provide { key }
            | Self::Providers { key } => key,
        }
    }
}

/// The answer to a [`DhtRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DhtReply {
    /// A put (or remove) finished.
    Put {
        /// The key.
        key: String,
        /// The record's version.
        seq: u64,
        /// When it expires (Unix ms).
        expires_at_unix_ms: u64,
        /// Peers that acknowledged storing it (besides us).
        stored_at: usize,
        /// Whether this was a remove.
        removed: bool,
        /// Time taken, ms.
        duration_ms: u64,
        /// The operation's trace (`tabmesh.trace(id)` draws it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace_id: Option<crate::trace::TraceId>,
        /// How the lookup of the closest peers went.
        lookup: LookupStats,
    },
    /// A get finished.
    Get {
        /// The key.
        key: String,
        /// The best record found, if any (a removed key reports `None`).
        record: Option<RecordView>,
        /// Valid copies received.
        copies: usize,
        /// Invalid copies refused.
        refused: usize,
        /// Time taken, ms.
        duration_ms: u64,
        /// The operation's trace (`tabmesh.trace(id)` draws it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace_id: Option<crate::trace::TraceId>,
        /// How the lookup went.
        lookup: LookupStats,
    },
    /// A provide finished.
    Provide {
        /// The key.
        key: String,
        /// Peers that received the announcement.
        stored_at: usize,
        /// Time taken, ms.
        duration_ms: u64,
        /// The operation's trace (`tabmesh.trace(id)` draws it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace_id: Option<crate::trace::TraceId>,
    },
    /// A providers lookup finished.
    Providers {
        /// The key.
        key: String,
        /// Who provides it.
        providers: Vec<ProviderView>,
        /// Time taken, ms.
        duration_ms: u64,
        /// The operation's trace (`tabmesh.trace(id)` draws it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace_id: Option<crate::trace::TraceId>,
        /// How the lookup went.
        lookup: LookupStats,
    },
}

impl DhtReply {
    /// The reply with the id of the operation's trace.
    pub fn traced(mut self, id: crate::trace::TraceId) -> Self {
        match &mut self {
            Self::Put { trace_id, .. }
            | Self::Get { trace_id, .. }
            | Self::Provide { trace_id, .. }
            | Self::Providers { trace_id, .. } => *trace_id = Some(id),
        }
        self
    }

    /// One line describing the reply, as the CLI prints it and the Event log shows it.
    pub fn summary(&self) -> String {
        match self {
            Self::Put {
                stored_at,
                removed,
                seq,
                duration_ms,
                ..
            } => {
                let what = if *removed { "removed" } else { "stored" };
                format!("{what} (v{seq}) at {stored_at} peer(s) in {duration_ms} ms")
            }
            Self::Get {
                record: Some(r),
                copies,
                duration_ms,
                lookup,
                ..
            } => format!(
                "found \"{}\" by {} ({copies} cop{}) in {duration_ms} ms, {} round(s), {} peer(s) asked",
                r.preview,
                r.publisher_name,
                if *copies == 1 { "y" } else { "ies" },
                lookup.rounds,
                lookup.contacted
            ),
            Self::Get {
                duration_ms,
                lookup,
                ..
            } => format!(
                "not found ({duration_ms} ms, {} round(s), {} peer(s) asked)",
                lookup.rounds, lookup.contacted
            ),
            Self::Provide {
                stored_at,
                duration_ms,
                ..
            } => format!("announced to {stored_at} peer(s) in {duration_ms} ms"),
            Self::Providers {
                providers,
                duration_ms,
                ..
            } => format!("{} provider(s) in {duration_ms} ms", providers.len()),
        }
    }
}

/// The shape of a lookup: what Kademlia promises to keep near log2 N.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupStats {
    /// Deepest round reached (1: only peers we knew).
    pub rounds: u32,
    /// Peers asked.
    pub contacted: usize,
    /// Of those, peers that answered before the lookup ended.
    #[serde(default)]
    pub answered: usize,
}

/// Why a request failed. The text is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DhtError {
    /// The request is invalid (key, value, lifetime, quota, ownership).
    #[error("refused: {0}")]
    Refused(String),
    /// We know no other peer yet.
    #[error("no peers to ask yet: wait for the relay and peer discovery")]
    NoPeers,
    /// The lookup failed.
    #[error("{0}")]
    Failed(String),
    /// Not done by the operation's deadline, with nothing to answer with.
    #[error("no answer in {} s while {during}: {}", after_ms / 1000, answered_text(*answered, *asked))]
    TimedOut {
        /// The deadline, ms after the request.
        after_ms: u64,
        /// What the operation was doing.
        during: String,
        /// Peers that answered the current phase.
        answered: usize,
        /// Peers asked in the current phase.
        asked: usize,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// How many of the peers asked answered, in words.
fn answered_text(answered: usize, asked: usize) -> String {
    match (answered, asked) {
        (0, 0) => "no peer answered".to_owned(),
        (answered, asked) => format!(
            "{answered} of {} peer(s) asked answered",
            asked.max(answered)
        ),
    }
}

/// A held (or found) record, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    /// The user's key (text, or `0x…` hex), without the `/tabmesh/` namespace.
    pub key: String,
    /// Stored under its old key (before the namespace): read until it expires, see [`key`].
    #[serde(default)]
    pub old_key: bool,
    /// The value, when it is text (else `None`; see `preview`).
    pub value: Option<String>,
    /// A short preview of the value.
    pub preview: String,
    /// Value size in bytes.
    pub value_bytes: usize,
    /// Publisher's peer id.
    pub publisher: String,
    /// Publisher's name.
    pub publisher_name: String,
    /// Whether we published it.
    pub mine: bool,
    /// Version.
    pub seq: u64,
    /// Expiry, Unix ms.
    pub expires_at_unix_ms: u64,
    /// Time left, ms.
    pub expires_in_ms: u64,
    /// Removed by its publisher.
    pub tombstone: bool,
    /// Name of the peer that handed it to us, if not ourselves.
    pub from: Option<String>,
}

impl RecordView {
    /// The view of `record` at `now_ms` (Unix ms) for the peer `local`.
    pub fn new(
        record: &record::SignedRecord,
        from: Option<&crate::PeerId>,
        local: &crate::PeerId,
        now_ms: u64,
    ) -> Self {
        Self {
            key: key::user_text(&record.key),
            old_key: key::is_old(&record.key),
            value: String::from_utf8(record.value.clone()).ok(),
            preview: record::preview(&record.value, 48),
            value_bytes: record.value.len(),
            publisher: record.publisher.to_base58(),
            publisher_name: crate::names::peer_name(&record.publisher),
            mine: &record.publisher == local,
            seq: record.seq,
            expires_at_unix_ms: record.expires_at_ms,
            expires_in_ms: record.expires_at_ms.saturating_sub(now_ms),
            tombstone: record.tombstone,
            from: from.map(crate::names::peer_name),
        }
    }
}

/// A provider record, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderView {
    /// The key.
    pub key: String,
    /// The provider's peer id.
    pub peer_id: String,
    /// Its name.
    pub name: String,
    /// Whether it is us.
    pub mine: bool,
    /// Time left, ms; `None` when it has no expiry: our own (renewed while we provide the
    /// key) and those a lookup found.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
}

/// One peer of the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingPeerView {
    /// Peer id.
    pub peer_id: String,
    /// Name.
    pub name: String,
    /// The leading bytes of the XOR distance between its key and ours, hex.
    pub distance: String,
    /// Whether we are connected to it.
    pub connected: bool,
}

/// One k-bucket: the peers whose XOR distance from us has its highest set bit at `index`
/// (distance in [2^index, 2^(index+1))).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketView {
    /// The bucket index (log2 of the distance).
    pub index: u32,
    /// Its peers, closest first.
    pub peers: Vec<RoutingPeerView>,
}

/// Counters of the DHT's traffic and refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtCounters {
    /// Records other peers stored here.
    pub records_accepted: u64,
    /// Records refused (invalid, stale, held by another publisher, quota).
    pub records_refused: u64,
    /// Provider records refused.
    pub providers_refused: u64,
    /// Records handed to peers that joined near their keys.
    pub handed_over: u64,
    /// Records restored from persistent storage at start.
    pub restored: u64,
    /// Peers dropped from the routing table because none of their addresses answered a dial.
    #[serde(default)]
    pub forgotten_unreachable: u64,
    /// Steps of Kademlia's own bootstraps ended before they asked anyone: the relay had named
    /// every peer there is (or this is the relay).
    #[serde(default)]
    pub bootstraps_skipped: u64,
    /// The last refusal, to show why.
    pub last_refusal: Option<String>,
}

/// The configurable part of the DHT, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtConfigView {
    /// k.
    pub replication_factor: usize,
    /// Replication interval, ms.
    pub replication_interval_ms: u64,
    /// Republication interval, ms.
    pub publication_interval_ms: u64,
    /// Provider record lifetime, ms.
    pub provider_ttl_ms: u64,
    /// Limits and quotas.
    pub limits: StoreLimits,
}

impl From<&DhtConfig> for DhtConfigView {
    fn from(c: &DhtConfig) -> Self {
        Self {
            replication_factor: c.replication_factor,
            replication_interval_ms: millis(c.replication_interval),
            publication_interval_ms: millis(c.publication_interval),
            provider_ttl_ms: millis(c.provider_ttl),
            limits: c.limits.clone(),
        }
    }
}

/// The `dht` section of the state view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtSection {
    /// Records held here, by key.
    pub records: Vec<RecordView>,
    /// Provider records held here.
    pub providers: Vec<ProviderView>,
    /// The routing table, non-empty buckets only, nearest first.
    pub routing_table: Vec<BucketView>,
    /// Peers in the routing table.
    pub routing_table_size: usize,
    /// The path of the latest lookup a user started.
    pub last_lookup: Option<LookupView>,
    /// Lookups running now.
    pub running_lookups: usize,
    /// Kademlia queries in flight here, by kind: the lookups a user started and Kademlia's own
    /// (bootstrap, replication, republication, records handed to a joining peer).
    #[serde(default)]
    pub queries: std::collections::BTreeMap<String, u64>,
    /// Traffic and refusals.
    pub counters: DhtCounters,
    /// Configuration and limits.
    pub config: DhtConfigView,
}
