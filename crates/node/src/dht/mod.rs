//! The DHT adapter: libp2p Kademlia configured for tabmesh, and the user operations on it.
//!
//! [`kademlia`] builds the behaviour every peer runs (tabs, native nodes, the relay and the
//! simulation): our protocol name, k-replication with periodic replication and republication,
//! filtered inserts so that every record from another peer passes the core's checks
//! ([`accept_inbound`]), and the [`observe`] wrapper that shows each lookup's requests.
//!
//! [`Dht`] runs the operations a user asks for ([`DhtRequest`]) as small state machines over
//! Kademlia queries:
//! - **get**: `GET_VALUE` lookup; every copy found is checked and the best by the precedence
//!   rule wins; the lookup stops early once `get_quorum` valid copies are in.
//! - **put** / **remove**: a get first (to learn who holds the key and the latest version),
//!   then the signed record (or tombstone) with the next version goes to the k closest peers.
//! - **provide** / **providers**: `ADD_PROVIDER` / `GET_PROVIDERS`.
//!
//! It also hands records to peers that join close to their keys (as in the Kademlia paper), so
//! a joining tab receives what it is now responsible for without waiting for replication.

pub mod observe;
pub mod store;

use std::collections::HashMap;
use std::num::NonZeroUsize;

use futures::channel::oneshot;
use libp2p::identity::Keypair;
use libp2p::kad::{self, KBucketKey, Quorum, RecordKey};
use libp2p::{PeerId, StreamProtocol};
use tabmesh_core::dht::lookup::{LookupKind, LookupTrace};
use tabmesh_core::dht::record::{self, Precedence, SignedRecord, key_text, precedence};
use tabmesh_core::dht::store::Refusal;
use tabmesh_core::dht::{
    BucketView, DhtConfig, DhtCounters, DhtError, DhtReply, DhtRequest, DhtSection, LookupStats,
    ProviderView, RecordView, RoutingPeerView,
};
use tabmesh_core::names::peer_name;
use tabmesh_core::peers::millis;
use tabmesh_core::protocol;
use web_time::{Duration, Instant};

pub use observe::{ObservedKad, RpcObservation};
pub use store::{KadStore, MemoryBackend, StoreBackend, kad_record, unix_now_ms};

/// Records handed to one joining peer at most.
const MAX_HANDOVER: usize = 64;
/// How often expired records are dropped.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(10);
/// Operations running at once at most (further requests are refused until one ends).
const MAX_RUNNING_OPS: usize = 32;

/// The reply channel of a user request.
pub type DhtReplySender = oneshot::Sender<Result<DhtReply, DhtError>>;

/// The Kademlia behaviour of a tabmesh peer, with its store on `backend`.
pub fn kademlia(
    peer_id: PeerId,
    config: &DhtConfig,
    backend: Box<dyn StoreBackend>,
) -> ObservedKad {
    let mut cfg = kad::Config::new(StreamProtocol::new(protocol::KADEMLIA));
    cfg.set_query_timeout(config.query_timeout)
        .set_replication_factor(
            NonZeroUsize::new(config.replication_factor).unwrap_or(kad::K_VALUE),
        )
        .set_record_ttl(Some(Duration::from_millis(config.limits.record.max_ttl_ms)))
        .set_replication_interval(Some(config.replication_interval))
        .set_publication_interval(Some(config.publication_interval))
        .set_provider_record_ttl(Some(config.provider_ttl))
        .set_provider_publication_interval(Some(config.provider_publication_interval))
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        .set_periodic_bootstrap_interval(config.periodic_bootstrap);
    let store = KadStore::new(peer_id, config.limits.clone(), config.provider_ttl, backend);
    let mut kad = kad::Behaviour::with_config(peer_id, store, cfg);
    // Peers behind the relay are reachable through their circuit address: they serve the DHT.
    kad.set_mode(Some(kad::Mode::Server));
    ObservedKad::new(kad)
}

/// What happened to a record or provider record another peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundNote {
    /// The sender.
    pub peer: Option<PeerId>,
    /// A line for the wire log.
    pub summary: String,
    /// Why it was refused, if it was.
    pub refused: Option<String>,
    /// Whether a record (rather than a provider record) was concerned.
    pub record: bool,
}

/// Handles an inbound Kademlia request: stores what passes the checks, refuses the rest.
pub fn accept_inbound(kad: &mut ObservedKad, request: kad::InboundRequest) -> InboundNote {
    match request {
        kad::InboundRequest::PutRecord {
            source,
            record: Some(record),
            ..
        } => {
            let key = key_text(record.key.as_ref());
            match kad
                .store_mut()
                .accept_record(record.key.as_ref(), &record.value, source)
            {
                Ok(stored) => InboundNote {
                    peer: Some(source),
                    summary: format!("PUT_VALUE {key}: {stored:?}").to_lowercase(),
                    refused: None,
                    record: true,
                },
                Err(refusal) => InboundNote {
                    peer: Some(source),
                    summary: format!("PUT_VALUE {key} refused: {refusal}"),
                    refused: Some(refusal.to_string()),
                    record: true,
                },
            }
        }
        kad::InboundRequest::AddProvider {
            record: Some(record),
        } => {
            let key = key_text(record.key.as_ref());
            let peer = Some(record.provider);
            match kad.store_mut().accept_provider(&record) {
                Ok(()) => InboundNote {
                    peer,
                    summary: format!("ADD_PROVIDER {key}"),
                    refused: None,
                    record: false,
                },
                Err(refusal) => InboundNote {
                    peer,
                    summary: format!("ADD_PROVIDER {key} refused: {refusal}"),
                    refused: Some(refusal.to_string()),
                    record: false,
                },
            }
        }
        other => {
            let what = match other {
                kad::InboundRequest::FindNode { .. } => "FIND_NODE",
                kad::InboundRequest::GetProvider { .. } => "GET_PROVIDERS",
                kad::InboundRequest::AddProvider { .. } => "ADD_PROVIDER",
                kad::InboundRequest::GetRecord { .. } => "GET_VALUE",
                kad::InboundRequest::PutRecord { .. } => "PUT_VALUE",
            };
            InboundNote {
                peer: None,
                summary: format!("{what} request"),
                refused: None,
                record: false,
            }
        }
    }
}

/// What a running operation is doing.
#[derive(Debug)]
enum Phase {
    /// A get for the user.
    Get,
    /// The get before a put or remove.
    Resolve(Intent),
    /// Storing a signed record at the closest peers.
    Store { record: SignedRecord },
    /// Announcing that we provide the key.
    Provide,
    /// Looking for providers.
    Providers { found: Vec<PeerId> },
}

#[derive(Debug)]
enum Intent {
    Put { value: Vec<u8>, ttl_ms: u64 },
    Remove,
}

struct Op {
    key: Vec<u8>,
    phase: Phase,
    reply: Option<DhtReplySender>,
    started: Instant,
    trace: LookupTrace,
    copies: Vec<SignedRecord>,
    refused: usize,
    acks: usize,
}

/// A line for the node's wire log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtLog {
    /// Whether it was sent (else received or local).
    pub sent: bool,
    /// The peer concerned.
    pub peer: Option<PeerId>,
    /// What happened.
    pub summary: String,
}

/// The user operations of a peer's DHT, and what it shows.
pub struct Dht {
    config: DhtConfig,
    keypair: Keypair,
    ops: HashMap<kad::QueryId, Op>,
    last_lookup: Option<LookupTrace>,
    counters: DhtCounters,
    next_expire: Instant,
    logs: Vec<DhtLog>,
}

impl Dht {
    /// The DHT side of the peer `keypair`; `restored` records came back from storage.
    pub fn new(config: DhtConfig, keypair: Keypair, restored: u64, now: Instant) -> Self {
        Self {
            config,
            keypair,
            ops: HashMap::new(),
            last_lookup: None,
            counters: DhtCounters {
                restored,
                ..DhtCounters::default()
            },
            next_expire: now + EXPIRE_INTERVAL,
            logs: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// Traffic and refusal counters.
    pub fn counters(&self) -> &DhtCounters {
        &self.counters
    }

    /// Log lines produced since the last call.
    pub fn take_logs(&mut self) -> Vec<DhtLog> {
        std::mem::take(&mut self.logs)
    }

    fn log(&mut self, sent: bool, peer: Option<PeerId>, summary: String) {
        self.logs.push(DhtLog {
            sent,
            peer,
            summary,
        });
    }

    /// When [`on_tick`](Self::on_tick) wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_expire
    }

    /// Periodic work: drop expired records.
    pub fn on_tick(&mut self, kad: &mut ObservedKad, now: Instant) {
        if now >= self.next_expire {
            self.next_expire = now + EXPIRE_INTERVAL;
            let gone = kad.store_mut().expire();
            if gone > 0 {
                self.log(false, None, format!("{gone} expired record(s) dropped"));
            }
        }
    }

    /// Starts a user request; the answer goes to `reply` when it is known.
    pub fn start(
        &mut self,
        kad: &mut ObservedKad,
        now: Instant,
        request: DhtRequest,
        reply: DhtReplySender,
    ) {
        match self.begin(kad, now, &request) {
            Ok((query, op)) => {
                let mut op = op;
                op.reply = Some(reply);
                kad.watch(query);
                self.ops.insert(query, op);
            }
            Err(error) => {
                self.log(
                    false,
                    None,
                    format!("{} {}: {error}", request.name(), request.key()),
                );
                let _ = reply.send(Err(error));
            }
        }
    }

    fn begin(
        &mut self,
        kad: &mut ObservedKad,
        now: Instant,
        request: &DhtRequest,
    ) -> Result<(kad::QueryId, Op), DhtError> {
        if self.ops.len() >= MAX_RUNNING_OPS {
            return Err(DhtError::Failed(format!(
                "too many operations running (at most {MAX_RUNNING_OPS}); try again shortly"
            )));
        }
        let limits = &self.config.limits.record;
        let key = request.key().as_bytes().to_vec();
        limits
            .check_key(&key)
            .map_err(|e| DhtError::Refused(e.to_string()))?;
        let (query, kind, phase) = match request {
            DhtRequest::Put { value, ttl_ms, .. } => {
                if value.len() > limits.max_value_bytes {
                    return Err(DhtError::Refused(
                        record::RecordError::ValueTooLarge {
                            len: value.len(),
                            max: limits.max_value_bytes,
                        }
                        .to_string(),
                    ));
                }
                let ttl_ms = ttl_ms.unwrap_or(limits.default_ttl_ms);
                limits
                    .check_ttl(ttl_ms)
                    .map_err(|e| DhtError::Refused(e.to_string()))?;
                let intent = Intent::Put {
                    value: value.as_bytes().to_vec(),
                    ttl_ms,
                };
                let query = kad.get_record(RecordKey::new(&key));
                (query, LookupKind::PutRecord, Phase::Resolve(intent))
            }
            DhtRequest::Remove { .. } => {
                let query = kad.get_record(RecordKey::new(&key));
                (query, LookupKind::PutRecord, Phase::Resolve(Intent::Remove))
            }
            DhtRequest::Get { .. } => {
                let query = kad.get_record(RecordKey::new(&key));
                (query, LookupKind::GetRecord, Phase::Get)
            }
            DhtRequest::Provide { .. } => {
                let query = kad.start_providing(RecordKey::new(&key)).map_err(|_| {
                    let reason = kad
                        .store_mut()
                        .take_last_refusal()
                        .map_or_else(|| "provider store full".to_owned(), |r| r.to_string());
                    DhtError::Refused(reason)
                })?;
                (query, LookupKind::AddProvider, Phase::Provide)
            }
            DhtRequest::Providers { .. } => {
                let query = kad.get_providers(RecordKey::new(&key));
                (
                    query,
                    LookupKind::GetProviders,
                    Phase::Providers { found: Vec::new() },
                )
            }
        };
        self.log(
            true,
            None,
            format!("{} {}: lookup started", request.name(), request.key()),
        );
        Ok((
            query,
            Op {
                trace: LookupTrace::new(kind, request.key().to_owned(), now),
                key,
                phase,
                reply: None,
                started: now,
                copies: Vec::new(),
                refused: 0,
                acks: 0,
            },
        ))
    }

    /// Applies the request/reply observations of watched queries to their traces.
    pub fn absorb_observations(&mut self, kad: &mut ObservedKad) {
        let observations: Vec<_> = kad.drain_observations().collect();
        for (at, observation) in observations {
            match observation {
                RpcObservation::Request { query, peer, kind } => {
                    if let Some(op) = self.ops.get_mut(&query) {
                        op.trace.on_request(at, peer);
                        tracing::trace!(%peer, kind, "kad request");
                    }
                }
                RpcObservation::Reply {
                    query,
                    peer,
                    closer,
                    found,
                    kind,
                } => {
                    if let Some(op) = self.ops.get_mut(&query) {
                        op.trace.on_reply(at, peer, &closer, found);
                        if kind == "PutRecordRes" {
                            op.acks += 1;
                        }
                    }
                }
                RpcObservation::Failure {
                    query,
                    peer,
                    reason,
                } => {
                    if let Some(op) = self.ops.get_mut(&query) {
                        op.trace.on_failure(at, peer, reason);
                    }
                }
            }
        }
    }

    /// Handles a Kademlia event. Returns it back if it concerns no DHT operation (discovery
    /// lookups are the node's own business).
    pub fn on_kad_event(
        &mut self,
        kad: &mut ObservedKad,
        now: Instant,
        event: kad::Event,
    ) -> Option<kad::Event> {
        self.absorb_observations(kad);
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } if self.ops.contains_key(&id) => {
                self.on_progress(kad, now, id, result, step.last);
                None
            }
            kad::Event::InboundRequest { request } => {
                let note = accept_inbound(kad, request);
                match (&note.refused, note.record) {
                    (Some(reason), true) => {
                        self.counters.records_refused += 1;
                        self.counters.last_refusal = Some(reason.clone());
                        tracing::info!(peer = ?note.peer, %reason, "record refused");
                    }
                    (Some(reason), false) => {
                        self.counters.providers_refused += 1;
                        self.counters.last_refusal = Some(reason.clone());
                    }
                    (None, true) => self.counters.records_accepted += 1,
                    (None, false) => {}
                }
                self.log(false, note.peer, note.summary);
                None
            }
            other => {
                if let kad::Event::RoutingUpdated {
                    peer,
                    is_new_peer: true,
                    ..
                } = &other
                {
                    self.hand_over(kad, *peer);
                }
                Some(other)
            }
        }
    }

    fn on_progress(
        &mut self,
        kad: &mut ObservedKad,
        now: Instant,
        id: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
    ) {
        let Some(mut op) = self.ops.remove(&id) else {
            return;
        };
        let limits = self.config.limits.record.clone();
        let mut done = last;
        match result {
            kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                match record::check(&op.key, &found.record.value, &limits, unix_now_ms()) {
                    Ok(copy) => op.copies.push(copy),
                    Err(e) => {
                        op.refused += 1;
                        let from = found.peer;
                        self.log(
                            false,
                            from,
                            format!("refused a copy of {}: {e}", key_text(&op.key)),
                        );
                    }
                }
                if op.copies.len() >= self.config.get_quorum.max(1)
                    && let Some(mut query) = kad.query_mut(&id)
                {
                    query.finish();
                }
            }
            kad::QueryResult::GetRecord(_) => done = true,
            kad::QueryResult::PutRecord(result) => {
                if let Err(
                    kad::PutRecordError::QuorumFailed { success, .. }
                    | kad::PutRecordError::Timeout { success, .. },
                ) = &result
                {
                    op.acks = op.acks.max(success.len());
                }
                done = true;
            }
            kad::QueryResult::StartProviding(_) => {
                // ADD_PROVIDER has no reply, and libp2p reports the query done before the
                // requests leave: they go to the k closest peers that answered the lookup.
                op.acks = op.trace.replied().min(self.config.replication_factor);
                done = true;
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                if let Phase::Providers { found } = &mut op.phase {
                    for p in providers {
                        if !found.contains(&p) {
                            found.push(p);
                        }
                    }
                }
            }
            kad::QueryResult::GetProviders(_) => done = true,
            _ => {}
        }
        if done {
            kad.unwatch(&id);
            self.finish(kad, now, op);
        } else {
            self.ops.insert(id, op);
        }
    }

    /// The best valid copy found (by the precedence rule).
    fn best(copies: &[SignedRecord], now_ms: u64) -> Option<&SignedRecord> {
        copies
            .iter()
            .fold(None, |best: Option<&SignedRecord>, copy| match best {
                None => Some(copy),
                Some(held) => match precedence(held, copy, now_ms) {
                    Precedence::Replace => Some(copy),
                    _ => Some(held),
                },
            })
    }

    fn finish(&mut self, kad: &mut ObservedKad, now: Instant, mut op: Op) {
        let now_ms = unix_now_ms();
        let key = key_text(&op.key);
        let duration_ms = millis(now.saturating_duration_since(op.started));
        let local = self.keypair.public().to_peer_id();
        let phase = std::mem::replace(&mut op.phase, Phase::Get);
        let lookup = LookupStats {
            rounds: op.trace.rounds(),
            contacted: op.trace.contacted(),
        };
        let outcome: Result<DhtReply, DhtError> = match phase {
            Phase::Get => {
                let best = Self::best(&op.copies, now_ms).filter(|r| !r.tombstone);
                Ok(DhtReply::Get {
                    key: key.clone(),
                    record: best.map(|r| RecordView::new(r, None, &local, now_ms)),
                    copies: op.copies.len(),
                    refused: op.refused,
                    duration_ms,
                    lookup,
                })
            }
            Phase::Resolve(intent) => {
                match self.next_record(kad, &op, intent, now_ms) {
                    Ok(record) => {
                        op.trace
                            .finish(now, format!("{} copies found", op.copies.len()));
                        let kad_rec = kad_record(&record, &record.encode());
                        match kad.put_record(kad_rec, Quorum::All) {
                            Ok(query) => {
                                kad.watch(query);
                                op.phase = Phase::Store { record };
                                // The store phase gets its own trace: the lookup the user sees.
                                op.trace =
                                    LookupTrace::new(LookupKind::PutRecord, key.clone(), now);
                                self.ops.insert(query, op);
                                return;
                            }
                            Err(_) => Err(DhtError::Refused(
                                kad.store_mut().take_last_refusal().map_or_else(
                                    || "the local store refused it".to_owned(),
                                    |r| r.to_string(),
                                ),
                            )),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            Phase::Store { record } => Ok(DhtReply::Put {
                key: key.clone(),
                seq: record.seq,
                expires_at_unix_ms: record.expires_at_ms,
                stored_at: op.acks,
                removed: record.tombstone,
                duration_ms,
                lookup,
            }),
            Phase::Provide => Ok(DhtReply::Provide {
                key: key.clone(),
                stored_at: op.acks,
                duration_ms,
            }),
            Phase::Providers { found } => Ok(DhtReply::Providers {
                key: key.clone(),
                providers: found
                    .iter()
                    .map(|p| ProviderView {
                        key: key.clone(),
                        peer_id: p.to_base58(),
                        name: peer_name(p),
                        mine: *p == local,
                        expires_in_ms: 0,
                    })
                    .collect(),
                duration_ms,
                lookup,
            }),
        };
        let summary = match &outcome {
            Ok(reply) => summarize(reply),
            Err(e) => e.to_string(),
        };
        op.trace.finish(now, summary.clone());
        self.log(false, None, format!("{key}: {summary}"));
        self.last_lookup = Some(op.trace);
        if let Some(reply) = op.reply {
            let _ = reply.send(outcome);
        }
    }

    /// The record a put or remove stores, given what the lookup found.
    fn next_record(
        &mut self,
        kad: &mut ObservedKad,
        op: &Op,
        intent: Intent,
        now_ms: u64,
    ) -> Result<SignedRecord, DhtError> {
        let local = self.keypair.public().to_peer_id();
        let held_here = kad
            .store_mut()
            .local()
            .get_live(&op.key, now_ms)
            .map(|r| r.record.clone());
        let mut copies = op.copies.clone();
        copies.extend(held_here);
        let best = Self::best(&copies, now_ms).cloned();
        if let Some(best) = &best
            && best.publisher != local
            && !best.tombstone
        {
            return Err(DhtError::Refused(
                Refusal::HeldByOther {
                    publisher: best.publisher,
                    until_ms: best.expires_at_ms,
                }
                .to_string(),
            ));
        }
        let seq = copies
            .iter()
            .filter(|r| r.publisher == local)
            .map(|r| r.seq)
            .max()
            .unwrap_or(0)
            + 1;
        let record = match intent {
            Intent::Put { value, ttl_ms } => SignedRecord::sign(
                &self.keypair,
                op.key.clone(),
                value,
                seq,
                now_ms + ttl_ms,
                false,
            ),
            Intent::Remove => {
                let Some(best) = best.filter(|b| !b.tombstone) else {
                    return Err(DhtError::Refused(format!(
                        "there is no record under {} to remove",
                        key_text(&op.key)
                    )));
                };
                // The tombstone lives as long as the value could, to outlast every stale copy.
                SignedRecord::sign(
                    &self.keypair,
                    op.key.clone(),
                    Vec::new(),
                    seq,
                    best.expires_at_ms,
                    true,
                )
            }
        };
        kad.store_mut()
            .put_own(record.clone())
            .map_err(|e| DhtError::Refused(e.to_string()))?;
        Ok(record)
    }

    /// Hands `peer` the records it is now among the k closest peers for.
    fn hand_over(&mut self, kad: &mut ObservedKad, peer: PeerId) {
        let now_ms = unix_now_ms();
        let k = self.config.replication_factor;
        let candidates: Vec<SignedRecord> = kad
            .store_mut()
            .local()
            .records()
            .filter(|r| !r.record.is_expired(now_ms))
            .map(|r| r.record.clone())
            .collect();
        let mut handed = 0;
        for record in candidates {
            if handed >= MAX_HANDOVER {
                break;
            }
            let target = KBucketKey::new(RecordKey::new(&record.key));
            let close = kad
                .get_closest_local_peers(&target)
                .take(k)
                .any(|key| *key.preimage() == peer);
            if close {
                let kad_rec = kad_record(&record, &record.encode());
                kad.put_record_to(kad_rec, std::iter::once(peer), Quorum::One);
                handed += 1;
            }
        }
        if handed > 0 {
            self.counters.handed_over += handed as u64;
            self.log(
                true,
                Some(peer),
                format!("handed over {handed} record(s) to a peer that joined near their keys"),
            );
        }
    }

    /// The `dht` section of the state view.
    pub fn view(&self, kad: &mut ObservedKad, now: Instant) -> DhtSection {
        let now_ms = unix_now_ms();
        let local = self.keypair.public().to_peer_id();
        let store = kad.store_mut().local();
        let records = store
            .records()
            .map(|r| RecordView::new(&r.record, r.from.as_ref(), &local, now_ms))
            .collect();
        let providers = store
            .provider_records()
            .map(|(k, e)| ProviderView {
                key: key_text(k),
                peer_id: e.provider.to_base58(),
                name: peer_name(&e.provider),
                mine: e.provider == local,
                expires_in_ms: e.expires_at_ms.saturating_sub(now_ms),
            })
            .collect();
        let local_key = KBucketKey::from(local);
        let mut routing_table = Vec::new();
        let mut routing_table_size = 0;
        for bucket in kad.kbuckets() {
            let mut peers: Vec<(kad::KBucketDistance, RoutingPeerView)> = bucket
                .iter()
                .map(|entry| {
                    let distance = entry.node.key.distance(&local_key);
                    let bytes = distance.0.to_big_endian();
                    let first = bytes.iter().position(|b| *b != 0).unwrap_or(0);
                    let shown = &bytes[first..(first + 4).min(bytes.len())];
                    let peer = *entry.node.key.preimage();
                    (
                        distance,
                        RoutingPeerView {
                            peer_id: peer.to_base58(),
                            name: peer_name(&peer),
                            distance: format!("{}…", tabmesh_core::hex::encode(shown)),
                            connected: entry.status == kad::NodeStatus::Connected,
                        },
                    )
                })
                .collect();
            if peers.is_empty() {
                continue;
            }
            peers.sort_by_key(|p| p.0);
            routing_table_size += peers.len();
            let index = peers[0].0.ilog2().unwrap_or(0);
            routing_table.push(BucketView {
                index,
                peers: peers.into_iter().map(|(_, p)| p).collect(),
            });
        }
        routing_table.sort_by_key(|b| b.index);
        let last_lookup = self
            .ops
            .values()
            .filter(|op| op.reply.is_some())
            .max_by_key(|op| op.started)
            .map(|op| &op.trace)
            .or(self.last_lookup.as_ref())
            .map(|t| t.view(now));
        DhtSection {
            records,
            providers,
            routing_table,
            routing_table_size,
            last_lookup,
            running_lookups: self.ops.len(),
            counters: self.counters.clone(),
            config: (&self.config).into(),
        }
    }
}

/// One line describing a reply.
pub fn summarize(reply: &DhtReply) -> String {
    match reply {
        DhtReply::Put {
            stored_at,
            removed,
            seq,
            duration_ms,
            ..
        } => {
            let what = if *removed { "removed" } else { "stored" };
            format!("{what} (v{seq}) at {stored_at} peer(s) in {duration_ms} ms")
        }
        DhtReply::Get {
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
        DhtReply::Get {
            duration_ms,
            lookup,
            ..
        } => format!(
            "not found ({duration_ms} ms, {} round(s), {} peer(s) asked)",
            lookup.rounds, lookup.contacted
        ),
        DhtReply::Provide {
            stored_at,
            duration_ms,
            ..
        } => format!("announced to {stored_at} peer(s) in {duration_ms} ms"),
        DhtReply::Providers {
            providers,
            duration_ms,
            ..
        } => format!("{} provider(s) in {duration_ms} ms", providers.len()),
    }
}
