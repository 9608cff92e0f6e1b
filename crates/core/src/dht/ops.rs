//! A user's DHT request as a clock-free state machine over Kademlia queries, with every rule
//! tabmesh adds to Kademlia's operations.
//!
//! The driver (`tabmesh_node::dht`) starts the Kademlia query an [`Operation`] asks for, feeds it
//! what the query reports (copies found, providers, acknowledgements, the end of the lookup) and
//! carries out its next step. Time enters as `now` (for the lookup path) and `now_ms` (Unix ms,
//! for record expiry). The rules:
//!
//! 1. **Checked before any traffic**: key 1 to `max_key_bytes` bytes, value at most
//!    `max_value_bytes`, lifetime within bounds (default: the configured lifetime). A request
//!    that could ask nobody (our routing table is empty) fails at once with
//!    [`DhtError::NoPeers`] instead of answering "stored at 0 peers" or "not found".
//! 2. **Get**: every copy found is checked (signature, limits, expiry); invalid copies are
//!    refused and counted. The lookup stops once `get_quorum` valid copies are in; the best copy
//!    by the precedence rule wins, and a tombstone reads as "not found". A providers lookup
//!    stops the same way, once `get_quorum` answers naming providers are in (our own store
//!    counts as one): each holder of the key's provider records names all it keeps, so the
//!    walk to the very closest peers adds little and, under load, costs a caller its deadline.
//! 3. **Ownership**: a put or remove first looks the key up. The key belongs to the publisher of
//!    the best live copy found (ours held locally included); if that is another publisher, the
//!    put is refused until their record expires or they remove it. When that lookup ran its
//!    course (it found no copy, so it walked to the closest peers), the record is stored at the
//!    k closest peers that answered it ([`Operation::store_peers`]) instead of walking there a
//!    second time; otherwise (it stopped early at a get quorum) the store walks again.
//! 4. **Versions**: the record stored is one version above the highest of ours seen.
//! 5. **Tombstones**: a remove stores a signed tombstone that lives as long as the value it
//!    removes could have (its expiry), so it outlasts every stale copy; removing a key with no
//!    live record is refused.
//! 6. **Provider acknowledgements**: `ADD_PROVIDER` has no reply, so a provide counts as stored
//!    at the peers that answered its lookup, at most k.
//! 7. **Hand-over**: a peer that joins among the k closest peers to a key we hold is handed the
//!    live record at once (the Kademlia paper's rule), at most [`MAX_HANDOVER`] records per
//!    joining peer.
//! 8. **Deadline**: every request is answered within `op_timeout`, whatever the network does:
//!    with the best copy found, the peers that stored the record or the providers found so far,
//!    or with [`DhtError::TimedOut`] saying what it was doing and how many peers answered
//!    ([`Operation::on_deadline`]). A store that no peer acknowledged is a failure, not
//!    "stored at 0 peers".
//! 9. **Namespace**: records live under `/tabmesh/<key>` ([`super::key`]); provider keys are the
//!    user's. A get (or the lookup before a put or remove) that finds no copy under the new key
//!    looks under the old key once ([`Next::Lookup`]), so records stored before the namespace are
//!    still read, and still owned, until they expire; what a put stores goes under the new key.

use libp2p_identity::{Keypair, PeerId};
use web_time::Instant;

use super::key;
use super::lookup::{LookupKind, LookupTrace};
use super::record::{self, Precedence, RecordLimits, SignedRecord, key_text, precedence};
use super::store::Refusal;
use super::{DhtConfig, DhtError, DhtReply, DhtRequest, LookupStats, ProviderView, RecordView};
use crate::names::peer_name;
use crate::peers::millis;
use crate::trace::assemble::KIND;
use crate::trace::{Span, SpanStatus, TraceContext};

/// Records handed to one joining peer at most (rule 7).
pub const MAX_HANDOVER: usize = 64;

/// The Kademlia query an operation needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `GET_VALUE` lookup for the key.
    GetRecord,
    /// `ADD_PROVIDER` for the key (lookup, then announcements).
    StartProviding,
    /// `GET_PROVIDERS` lookup for the key.
    GetProviders,
}

/// What happened to a copy a get received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyVerdict {
    /// Valid and kept; stop the lookup when `quorum` is true (rule 2).
    Kept {
        /// Whether enough valid copies are in.
        quorum: bool,
    },
    /// Invalid: refused and counted, with the reason.
    Refused(String),
}

/// The next step once a lookup has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Answer the user.
    Reply(Result<DhtReply, DhtError>),
    /// Store this signed record locally and at the k closest peers, then call
    /// [`Operation::on_store_started`] (or [`Operation::fail`] if that is impossible).
    Store(SignedRecord),
    /// Nothing was found under the key: look it up again under this old key (rule 9), feeding
    /// the copies to the same operation, which checks them against that key.
    Lookup(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Intent {
    Put { value: Vec<u8>, ttl_ms: u64 },
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// A get for the user.
    Get,
    /// The get before a put or remove.
    Resolve(Intent),
    /// Storing a signed record at the closest peers.
    Store(SignedRecord),
    /// Announcing that we provide the key.
    Provide,
    /// Looking for providers.
    Providers(Vec<PeerId>),
}

/// One running request.
#[derive(Debug, Clone)]
pub struct Operation {
    name: &'static str,
    /// The Kademlia key: what a put stores under.
    key: Vec<u8>,
    /// The key of the current lookup: `key`, or its old key (rule 9).
    lookup_key: Vec<u8>,
    /// The old key, while it is still to be looked up.
    old_key: Option<Vec<u8>>,
    /// The old key is looked up only if the first lookup ends before this, leaving the second
    /// one a whole query timeout before the deadline (else the deadline would cut it short).
    old_key_by: Instant,
    phase: Phase,
    started: Instant,
    deadline: Instant,
    trace: LookupTrace,
    /// The paths of the phases before this one (a put's lookup of the closest peers).
    earlier: Vec<LookupTrace>,
    copies: Vec<SignedRecord>,
    refused: usize,
    acks: usize,
    /// Answers that named providers (rule 2).
    provider_answers: usize,
    /// The peers that answered the lookup of `key` itself, when it ran its course (rule 3).
    store_peers: Vec<PeerId>,
}

impl Operation {
    /// Checks `request` (rule 1), given the number of peers in our routing table, and
    /// returns the operation with the query to start.
    pub fn start(
        config: &DhtConfig,
        request: &DhtRequest,
        known_peers: usize,
        now: Instant,
    ) -> Result<(Self, Query), DhtError> {
        let limits = &config.limits.record;
        // The user's key (`/tabmesh/x` typed in full is `x`) and the Kademlia key.
        let (user, key) = match request {
            DhtRequest::Provide { .. } | DhtRequest::Providers { .. } => {
                (request.key().as_bytes(), request.key().as_bytes().to_vec())
            }
            _ => (
                key::user_key(request.key().as_bytes()),
                key::kad_key(request.key()),
            ),
        };
        let checked = match user.is_empty() {
            true => Err(record::RecordError::EmptyKey),
            false => limits.check_key(&key),
        };
        checked.map_err(|e| {
            // In the user's terms: the namespace is ours, not theirs.
            let e = match e {
                record::RecordError::KeyTooLong { max, .. } => record::RecordError::KeyTooLong {
                    len: user.len(),
                    max: max.saturating_sub(key.len() - user.len()),
                },
                e => e,
            };
            DhtError::Refused(e.to_string())
        })?;
        let (query, kind, phase) = match request {
            _ if known_peers == 0 => return Err(DhtError::NoPeers),
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
                (
                    Query::GetRecord,
                    LookupKind::PutRecord,
                    Phase::Resolve(intent),
                )
            }
            DhtRequest::Remove { .. } => (
                Query::GetRecord,
                LookupKind::PutRecord,
                Phase::Resolve(Intent::Remove),
            ),
            DhtRequest::Get { .. } => (Query::GetRecord, LookupKind::GetRecord, Phase::Get),
            DhtRequest::Provide { .. } => (
                Query::StartProviding,
                LookupKind::AddProvider,
                Phase::Provide,
            ),
            DhtRequest::Providers { .. } => (
                Query::GetProviders,
                LookupKind::GetProviders,
                Phase::Providers(Vec::new()),
            ),
        };
        let op = Self {
            name: request.name(),
            earlier: Vec::new(),
            trace: LookupTrace::new(kind, request.key().to_owned(), now),
            old_key: match query {
                Query::GetRecord => key::old_key(&key),
                _ => None,
            },
            lookup_key: key.clone(),
            key,
            phase,
            started: now,
            deadline: now + config.op_timeout,
            old_key_by: (now + config.op_timeout)
                .checked_sub(config.query_timeout)
                .unwrap_or(now),
            copies: Vec::new(),
            refused: 0,
            acks: 0,
            provider_answers: 0,
            store_peers: Vec::new(),
        };
        Ok((op, query))
    }

    /// The request's name (`put`, `get`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Kademlia key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key of the current lookup: [`key`](Self::key), or its old key (rule 9).
    pub fn lookup_key(&self) -> &[u8] {
        &self.lookup_key
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When it must be answered by (rule 8).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The path of the current lookup.
    pub fn trace(&self) -> &LookupTrace {
        &self.trace
    }

    /// The path of the current lookup, to record requests and replies in.
    pub fn trace_mut(&mut self) -> &mut LookupTrace {
        &mut self.trace
    }

    /// Where to store without walking to the closest peers again (rule 3): the peers that
    /// answered the lookup of the key when it ran its course, in the order they were asked
    /// (the driver keeps the k closest); empty when the store must walk.
    pub fn store_peers(&self) -> &[PeerId] {
        &self.store_peers
    }

    /// A peer acknowledged storing the record.
    pub fn on_store_ack(&mut self) {
        self.acks += 1;
    }

    /// Kademlia reported how many peers acknowledged the store (when it could not reach all).
    pub fn on_store_acks_reported(&mut self, acks: usize) {
        self.acks = self.acks.max(acks);
    }

    /// A get found a copy (rule 2).
    pub fn on_copy(
        &mut self,
        raw: &[u8],
        limits: &RecordLimits,
        get_quorum: usize,
        now_ms: u64,
    ) -> CopyVerdict {
        match record::check(&self.lookup_key, raw, limits, now_ms) {
            Ok(copy) => {
                self.copies.push(copy);
                CopyVerdict::Kept {
                    quorum: self.copies.len() >= get_quorum.max(1),
                }
            }
            Err(e) => {
                self.refused += 1;
                let key = key_text(&self.lookup_key);
                CopyVerdict::Refused(format!("refused a copy of {key}: {e}"))
            }
        }
    }

    /// A providers lookup received an answer naming providers (from a peer, or from our own
    /// store). Returns whether `get_quorum` such answers are in, so the lookup may stop (rule 2).
    pub fn on_providers(
        &mut self,
        providers: impl IntoIterator<Item = PeerId>,
        get_quorum: usize,
    ) -> bool {
        let Phase::Providers(found) = &mut self.phase else {
            return false;
        };
        let mut named = false;
        for p in providers {
            named = true;
            if !found.contains(&p) {
                found.push(p);
            }
        }
        self.provider_answers += usize::from(named);
        self.provider_answers >= get_quorum.max(1)
    }

    /// The provide's lookup ended and its announcements left (rule 6).
    pub fn on_provided(&mut self, replication_factor: usize) {
        self.acks = self.trace.replied().min(replication_factor);
    }

    /// The current query ended. `held_here` is our own live copy of the
    /// [`lookup_key`](Self::lookup_key), if any.
    pub fn on_lookup_done(
        &mut self,
        now: Instant,
        now_ms: u64,
        keypair: &Keypair,
        held_here: Option<&SignedRecord>,
    ) -> Next {
        // Rule 3: a lookup of the key that found no copy walked to the closest peers; they are
        // where the record goes. (Taken before the lookup under the old key replaces the path.)
        if matches!(self.phase, Phase::Resolve(_))
            && self.lookup_key == self.key
            && self.copies.is_empty()
        {
            self.store_peers = self.trace.answered_peers();
        }
        if matches!(self.phase, Phase::Get | Phase::Resolve(_))
            && self.copies.is_empty()
            && held_here.is_none()
            && now <= self.old_key_by
            && let Some(old) = self.old_key.take()
        {
            return self.look_up_old_key(old, now);
        }
        match &self.phase {
            Phase::Resolve(intent) => {
                let intent = intent.clone();
                let mut copies = self.copies.clone();
                copies.extend(held_here.cloned());
                match next_record(keypair, &self.key, intent, &copies, now_ms) {
                    Ok(record) => {
                        self.trace
                            .finish(now, format!("{} copies found", self.copies.len()));
                        Next::Store(record)
                    }
                    Err(e) => Next::Reply(Err(e)),
                }
            }
            Phase::Store(_) if self.acks == 0 => Next::Reply(Err(DhtError::Failed(format!(
                "stored here only: none of the {} peer(s) asked acknowledged it \
                 (it is republished from here)",
                self.trace.contacted()
            )))),
            _ => Next::Reply(Ok(self.reply(now, now_ms, &keypair.public().to_peer_id()))),
        }
    }

    /// Rule 8: the deadline passed. The answer is what the operation has (a valid copy, the
    /// peers that stored the record, providers found), else why there is none.
    pub fn on_deadline(
        &self,
        now: Instant,
        now_ms: u64,
        local: &PeerId,
    ) -> Result<DhtReply, DhtError> {
        let has_answer = match &self.phase {
            Phase::Get => !self.copies.is_empty(),
            Phase::Store(_) => self.acks > 0,
            Phase::Providers(found) => !found.is_empty(),
            Phase::Resolve(_) | Phase::Provide => false,
        };
        if has_answer {
            return Ok(self.reply(now, now_ms, local));
        }
        let during = match &self.phase {
            Phase::Get => "looking the key up",
            Phase::Resolve(_) => "looking the key up before storing",
            Phase::Store(_) => "storing the record",
            Phase::Provide => "announcing the key",
            Phase::Providers(_) => "looking for providers",
        };
        Err(DhtError::TimedOut {
            after_ms: millis(self.deadline.saturating_duration_since(self.started)),
            during: during.to_owned(),
            answered: self.trace.replied(),
            asked: self.trace.contacted(),
        })
    }

    /// Rule 9: the lookup under the new key found nothing; the next one reads the old key.
    fn look_up_old_key(&mut self, old: Vec<u8>, now: Instant) -> Next {
        let kind = match self.phase {
            Phase::Get => LookupKind::GetRecord,
            _ => LookupKind::PutRecord,
        };
        let target = format!("{} (old key)", key_text(&old));
        let mut lookup = std::mem::replace(&mut self.trace, LookupTrace::new(kind, target, now));
        lookup.finish(now, format!("nothing under {}", key_text(&self.lookup_key)));
        lookup.relabel(LookupKind::GetRecord);
        self.earlier.push(lookup);
        self.lookup_key = old.clone();
        Next::Lookup(old)
    }

    /// The record of [`Next::Store`] is stored locally and its store query started: the store
    /// phase gets a lookup path of its own, the one the user sees.
    pub fn on_store_started(&mut self, record: SignedRecord, now: Instant) {
        let store = LookupTrace::new(LookupKind::PutRecord, key::user_text(&self.key), now);
        let mut lookup = std::mem::replace(&mut self.trace, store);
        lookup.finish(now, "closest peers found".to_owned());
        lookup.relabel(LookupKind::GetRecord);
        self.earlier.push(lookup);
        self.phase = Phase::Store(record);
    }

    /// The operation as the spans of trace `root`, recorded by `me` and ending at `now` with
    /// `status`: a root span `dht.<op> <key>`, under it a span per phase (a put's lookup, then
    /// its store), and under each a span per request ([`LookupTrace::spans`]). `wall` turns an
    /// instant into Unix ms. Call it before [`finish`](Self::finish)ing the current phase or after.
    pub fn spans(
        &self,
        root: TraceContext,
        me: &str,
        now: Instant,
        status: SpanStatus,
        rng: &mut impl rand::RngCore,
        wall: impl Fn(Instant) -> u64,
    ) -> Vec<Span> {
        let key = key::user_text(&self.key);
        let mut top = Span::start(
            root,
            None,
            &format!("dht.{} {key}", self.name),
            me,
            wall(self.started),
        );
        top.attribute(KIND, "internal");
        top.attribute("dht.key", &key);
        top.attribute("dht.kad_key", key_text(&self.key));
        top.end(wall(now), status);
        let mut spans = vec![top];
        let mut current = self.trace.clone();
        current.finish(now, String::new());
        for phase in self.earlier.iter().chain([&current]) {
            // A request that fails is normal in a lookup: its own span says so.
            let (context, parent) = (root.child(rng), Some(root.span_id));
            spans.extend(phase.spans(context, parent, me, SpanStatus::Ok, rng, &wall));
        }
        spans
    }

    /// Ends the operation with `outcome`; returns the outcome and the finished lookup path.
    pub fn finish(
        mut self,
        now: Instant,
        outcome: Result<DhtReply, DhtError>,
    ) -> (Result<DhtReply, DhtError>, LookupTrace) {
        let summary = match &outcome {
            Ok(reply) => reply.summary(),
            Err(e) => e.to_string(),
        };
        self.trace.finish(now, summary);
        (outcome, self.trace)
    }

    /// Ends the operation with an error.
    pub fn fail(self, now: Instant, error: DhtError) -> (Result<DhtReply, DhtError>, LookupTrace) {
        self.finish(now, Err(error))
    }

    fn reply(&self, now: Instant, now_ms: u64, local: &PeerId) -> DhtReply {
        let key = key::user_text(&self.key);
        let duration_ms = millis(now.saturating_duration_since(self.started));
        let lookup = LookupStats {
            rounds: self.trace.rounds(),
            contacted: self.trace.contacted(),
            answered: self.trace.replied(),
        };
        match &self.phase {
            Phase::Get | Phase::Resolve(_) => {
                let best = best(&self.copies, now_ms).filter(|r| !r.tombstone);
                DhtReply::Get {
                    key,
                    record: best.map(|r| RecordView::new(r, None, local, now_ms)),
                    copies: self.copies.len(),
                    refused: self.refused,
                    duration_ms,
                    trace_id: None,
                    lookup,
                }
            }
            Phase::Store(record) => DhtReply::Put {
                key,
                seq: record.seq,
                expires_at_unix_ms: record.expires_at_ms,
                stored_at: self.acks,
                removed: record.tombstone,
                duration_ms,
                trace_id: None,
                lookup,
            },
            Phase::Provide => DhtReply::Provide {
                key,
                stored_at: self.acks,
                duration_ms,
                trace_id: None,
            },
            Phase::Providers(found) => DhtReply::Providers {
                providers: found
                    .iter()
                    .map(|p| ProviderView {
                        key: key.clone(),
                        peer_id: p.to_base58(),
                        name: peer_name(p),
                        mine: p == local,
                        expires_in_ms: None,
                    })
                    .collect(),
                key,
                duration_ms,
                trace_id: None,
                lookup,
            },
        }
    }
}

/// The best of `copies` by the precedence rule.
pub fn best(copies: &[SignedRecord], now_ms: u64) -> Option<&SignedRecord> {
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

/// The record a put or remove stores, given every copy seen (rules 3 to 5).
fn next_record(
    keypair: &Keypair,
    key: &[u8],
    intent: Intent,
    copies: &[SignedRecord],
    now_ms: u64,
) -> Result<SignedRecord, DhtError> {
    let local = keypair.public().to_peer_id();
    // Copies were live when they arrived; one may have expired since.
    let best = best(copies, now_ms)
        .filter(|b| !b.is_expired(now_ms))
        .cloned();
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
        Intent::Put { value, ttl_ms } => {
            SignedRecord::sign(keypair, key.to_vec(), value, seq, now_ms + ttl_ms, false)
        }
        Intent::Remove => {
            let Some(best) = best.filter(|b| !b.tombstone) else {
                return Err(DhtError::Refused(format!(
                    "there is no record under {} to remove",
                    key::user_text(key)
                )));
            };
            SignedRecord::sign(
                keypair,
                key.to_vec(),
                Vec::new(),
                seq,
                best.expires_at_ms,
                true,
            )
        }
    };
    // Every peer would refuse it: say so here, before it is sent anywhere.
    record::check_namespace(&record).map_err(|e| DhtError::Refused(e.to_string()))?;
    Ok(record)
}

/// The records to hand to a peer that just joined the routing table (rule 7): the live ones
/// of `held` for which `is_close` says the peer is among the k closest, at most
/// [`MAX_HANDOVER`].
pub fn handover<'a>(
    held: impl IntoIterator<Item = &'a SignedRecord>,
    now_ms: u64,
    mut is_close: impl FnMut(&[u8]) -> bool,
) -> Vec<SignedRecord> {
    held.into_iter()
        .filter(|r| !r.is_expired(now_ms))
        .filter(|r| is_close(&r.key))
        .take(MAX_HANDOVER)
        .cloned()
        .collect()
}

/// Rule 9 for the records a peer restored: its own live records under old keys, re-signed under
/// the new key (same value, version, expiry and tombstone flag), except where `held` already
/// has a record under the new key; each followed by a tombstone for the old key (one version
/// up, same expiry), so that the old copy neither outlives a later value under the new key (a
/// get falls back to the old key when the new one has nothing) nor counts twice against the
/// publisher's quota. Store them in the order given (the tombstone frees the quota first).
pub fn move_own_records(
    held: &[SignedRecord],
    keypair: &Keypair,
    now_ms: u64,
) -> Vec<SignedRecord> {
    let local = keypair.public().to_peer_id();
    held.iter()
        .filter(|r| r.publisher == local && key::is_old(&r.key) && !r.is_expired(now_ms))
        .filter_map(|r| {
            let user = std::str::from_utf8(&r.key).ok()?;
            let new = key::kad_key(user);
            if held.iter().any(|h| h.key == new) {
                return None;
            }
            let moved = SignedRecord::sign(
                keypair,
                new,
                r.value.clone(),
                r.seq,
                r.expires_at_ms,
                r.tombstone,
            );
            record::check_namespace(&moved).ok()?;
            let gone = (!r.tombstone).then(|| {
                SignedRecord::sign(
                    keypair,
                    r.key.clone(),
                    Vec::new(),
                    r.seq + 1,
                    r.expires_at_ms,
                    true,
                )
            });
            Some(gone.into_iter().chain([moved]))
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn keypair() -> Keypair {
        Keypair::generate_ed25519()
    }

    fn config() -> DhtConfig {
        DhtConfig::default()
    }

    fn put(key: &str, value: &str, ttl_ms: Option<u64>) -> DhtRequest {
        DhtRequest::Put {
            key: key.into(),
            value: value.into(),
            ttl_ms,
        }
    }

    /// A record for the user's key `k`, under its Kademlia key.
    fn signed(key: &Keypair, k: &str, v: &str, seq: u64, expires: u64) -> SignedRecord {
        SignedRecord::sign(
            key,
            key::kad_key(k),
            v.as_bytes().to_vec(),
            seq,
            expires,
            false,
        )
    }

    /// A record stored under the old key `k`, before the namespace.
    fn signed_old(key: &Keypair, k: &str, v: &str, seq: u64, expires: u64) -> SignedRecord {
        let record = signed(key, k, v, seq, expires);
        let old = key::old_key(&record.key).expect("namespaced");
        SignedRecord::sign(key, old, record.value, seq, expires, false)
    }

    /// The end of a lookup that found nothing, and of the old key's lookup after it (rule 9).
    fn done_after_old_key(op: &mut Operation, now: Instant, me: &Keypair) -> Next {
        match op.on_lookup_done(now, NOW_MS, me, None) {
            Next::Lookup(_) => op.on_lookup_done(now, NOW_MS, me, None),
            next => next,
        }
    }

    fn refused(result: Result<(Operation, Query), DhtError>) -> String {
        match result {
            Err(DhtError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_put_is_traced_as_its_lookup_then_its_store_each_request_a_span() {
        use crate::dht::lookup::ASKED;
        use rand::SeedableRng;
        let t0 = Instant::now();
        let at = |ms| t0 + web_time::Duration::from_millis(ms);
        let me = keypair();
        let (a, b) = (
            keypair().public().to_peer_id(),
            keypair().public().to_peer_id(),
        );
        let (mut op, _) = Operation::start(&config(), &put("k", "v", None), 8, t0).expect("valid");
        op.trace_mut().on_request(at(1), a);
        op.trace_mut().on_reply(at(5), a, &[b], false);
        let ours = signed(&me, "k", "v0", 1, NOW_MS + 60_000);
        let Next::Store(record) = op.on_lookup_done(at(6), NOW_MS, &me, Some(&ours)) else {
            panic!("stores");
        };
        op.on_store_started(record, at(6));
        op.trace_mut().on_request(at(7), b);
        op.trace_mut().on_reply(at(9), b, &[], false);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let root = TraceContext::root(&mut rng);
        let wall = |t: Instant| 5_000 + millis(t.saturating_duration_since(t0));
        let spans = op.spans(root, "me", at(10), SpanStatus::Ok, &mut rng, wall);
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dht.put k",
                "dht.get_record k",
                "dht.request round 1",
                "dht.put_record k",
                "dht.request round 1"
            ]
        );
        let (top, lookup, store) = (&spans[0], &spans[1], &spans[3]);
        assert_eq!((top.start_ms, top.end_ms), (5_000, Some(5_010)));
        assert_eq!(lookup.parent_span_id, Some(root.span_id));
        assert_eq!(store.parent_span_id, Some(root.span_id));
        assert_eq!(spans[2].parent_span_id, Some(lookup.span_id));
        assert_eq!(spans[4].parent_span_id, Some(store.span_id));
        assert_eq!(spans[2].attributes[ASKED], a.to_base58());
        assert_eq!(spans[4].attributes[ASKED], b.to_base58());
        assert_eq!((lookup.end_ms, store.start_ms), (Some(5_006), 5_006));
        assert!(spans.iter().all(|s| s.trace_id == root.trace_id));
    }

    #[test]
    fn rule_1_bad_requests_are_refused_before_any_traffic() {
        let t0 = Instant::now();
        let c = config();
        assert!(refused(Operation::start(&c, &put("", "v", None), 8, t0)).contains("key"));
        let long = "k".repeat(c.limits.record.max_key_bytes + 1);
        assert!(
            refused(Operation::start(&c, &DhtRequest::Get { key: long }, 8, t0)).contains("key")
        );
        let big = "x".repeat(c.limits.record.max_value_bytes + 1);
        assert!(refused(Operation::start(&c, &put("k", &big, None), 8, t0)).contains("bytes"));
        assert!(refused(Operation::start(&c, &put("k", "v", Some(1)), 8, t0)).contains("lifetime"));
        let (_, query) = Operation::start(&c, &put("k", "v", None), 8, t0).expect("valid");
        assert_eq!(query, Query::GetRecord, "a put looks the key up first");
        let (_, query) =
            Operation::start(&c, &DhtRequest::Provide { key: "k".into() }, 8, t0).expect("valid");
        assert_eq!(query, Query::StartProviding);
        // Nobody to ask yet: said at once, whatever the request.
        for request in [put("k", "v", None), DhtRequest::Get { key: "k".into() }] {
            assert!(matches!(
                Operation::start(&c, &request, 0, t0),
                Err(DhtError::NoPeers)
            ));
        }
    }

    #[test]
    fn rule_2_a_get_refuses_bad_copies_stops_at_the_quorum_and_returns_the_best() {
        let t0 = Instant::now();
        let c = config();
        let limits = &c.limits.record;
        let me = keypair();
        let publisher = keypair();
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        let v1 = signed(&publisher, "k", "old", 1, NOW_MS + 60_000).encode();
        let v2 = signed(&publisher, "k", "new", 2, NOW_MS + 60_000).encode();
        let wrong_key = signed(&publisher, "other", "x", 9, NOW_MS + 60_000).encode();
        assert!(matches!(
            op.on_copy(&wrong_key, limits, 3, NOW_MS),
            CopyVerdict::Refused(_)
        ));
        assert!(matches!(
            op.on_copy(b"garbage", limits, 3, NOW_MS),
            CopyVerdict::Refused(_)
        ));
        assert_eq!(
            op.on_copy(&v1, limits, 3, NOW_MS),
            CopyVerdict::Kept { quorum: false }
        );
        assert_eq!(
            op.on_copy(&v2, limits, 3, NOW_MS),
            CopyVerdict::Kept { quorum: false }
        );
        assert_eq!(
            op.on_copy(&v1, limits, 3, NOW_MS),
            CopyVerdict::Kept { quorum: true }
        );
        let Next::Reply(Ok(DhtReply::Get {
            record: Some(found),
            copies,
            refused,
            ..
        })) = op.on_lookup_done(t0, NOW_MS, &me, None)
        else {
            panic!("a found record");
        };
        assert_eq!((found.value.as_deref(), found.seq), (Some("new"), 2));
        assert_eq!((copies, refused), (3, 2));
    }

    #[test]
    fn rule_2_a_tombstone_reads_as_not_found() {
        let t0 = Instant::now();
        let c = config();
        let publisher = keypair();
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        let removed = SignedRecord::sign(
            &publisher,
            key::kad_key("k"),
            Vec::new(),
            2,
            NOW_MS + 60_000,
            true,
        );
        op.on_copy(&removed.encode(), &c.limits.record, 3, NOW_MS);
        let Next::Reply(Ok(DhtReply::Get { record, copies, .. })) =
            op.on_lookup_done(t0, NOW_MS, &keypair(), None)
        else {
            panic!("a get reply");
        };
        assert_eq!((record, copies), (None, 1));
    }

    #[test]
    fn rule_3_a_key_held_by_another_publisher_is_refused() {
        let t0 = Instant::now();
        let c = config();
        let (me, other) = (keypair(), keypair());
        let (mut op, _) = Operation::start(&c, &put("k", "mine", None), 8, t0).expect("valid");
        let theirs = signed(&other, "k", "theirs", 1, NOW_MS + 60_000);
        op.on_copy(&theirs.encode(), &c.limits.record, 3, NOW_MS);
        let Next::Reply(Err(DhtError::Refused(why))) = op.on_lookup_done(t0, NOW_MS, &me, None)
        else {
            panic!("refused");
        };
        assert!(
            why.contains(&peer_name(&other.public().to_peer_id())),
            "{why}"
        );
        // Once their record has expired the key is free.
        let (mut op, _) = Operation::start(&c, &put("k", "mine", None), 8, t0).expect("valid");
        op.on_copy(&theirs.encode(), &c.limits.record, 3, NOW_MS);
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS + 60_001, &me, None),
            Next::Store(_)
        ));
    }

    #[test]
    fn rule_3_our_own_copy_held_here_counts_too() {
        let t0 = Instant::now();
        let c = config();
        let (me, other) = (keypair(), keypair());
        // Nobody answered the lookup, but we hold another publisher's live record ourselves.
        let held = signed(&other, "k", "theirs", 4, NOW_MS + 60_000);
        let (mut op, _) = Operation::start(&c, &put("k", "mine", None), 8, t0).expect("valid");
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, Some(&held)),
            Next::Reply(Err(DhtError::Refused(_)))
        ));
    }

    #[test]
    fn rule_3_a_lookup_that_ran_its_course_names_where_to_store_and_one_cut_short_does_not() {
        let t0 = Instant::now();
        let c = config();
        let (me, other) = (keypair(), keypair());
        let peers: Vec<PeerId> = (0..4).map(|_| keypair().public().to_peer_id()).collect();
        // No copy anywhere: the lookup walked to the closest peers; those that answered (not
        // the one that failed) are where the record goes, also after the old key's lookup.
        let (mut op, _) = Operation::start(&c, &put("k", "v", None), 8, t0).expect("valid");
        for p in &peers {
            op.trace_mut().on_request(t0, *p);
        }
        for p in &peers[..3] {
            op.trace_mut().on_reply(t0, *p, &[], false);
        }
        op.trace_mut().on_failure(t0, peers[3], "timeout".into());
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Lookup(_)
        ));
        let elsewhere = keypair().public().to_peer_id();
        op.trace_mut().on_request(t0, elsewhere);
        op.trace_mut().on_reply(t0, elsewhere, &[], false);
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Store(_)
        ));
        assert_eq!(
            op.store_peers(),
            &peers[..3],
            "the new key's lookup, not the old one's"
        );
        // A copy found: the lookup may have stopped at the get quorum, so the store walks.
        let (mut op, _) = Operation::start(&c, &put("k", "v", None), 8, t0).expect("valid");
        op.trace_mut().on_request(t0, peers[0]);
        op.trace_mut().on_reply(t0, peers[0], &[], true);
        let ours = signed(&me, "k", "old", 1, NOW_MS + 60_000);
        op.on_copy(&ours.encode(), &c.limits.record, 3, NOW_MS);
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Store(_)
        ));
        assert!(op.store_peers().is_empty());
        // A get never stores.
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        op.trace_mut().on_request(t0, peers[0]);
        op.trace_mut().on_reply(t0, peers[0], &[], false);
        op.on_lookup_done(t0, NOW_MS, &other, None);
        assert!(op.store_peers().is_empty());
    }

    #[test]
    fn rule_4_the_next_version_is_one_above_the_highest_of_ours() {
        let t0 = Instant::now();
        let c = config();
        let me = keypair();
        let (mut op, _) =
            Operation::start(&c, &put("k", "v3", Some(60_000)), 8, t0).expect("valid");
        // Copies of our versions 2 and 5 are around (5 held here).
        op.on_copy(
            &signed(&me, "k", "v2", 2, NOW_MS + 60_000).encode(),
            &c.limits.record,
            3,
            NOW_MS,
        );
        let held = signed(&me, "k", "v5", 5, NOW_MS + 60_000);
        let Next::Store(record) = op.on_lookup_done(t0, NOW_MS, &me, Some(&held)) else {
            panic!("stores");
        };
        assert_eq!(record.seq, 6);
        assert_eq!(record.expires_at_ms, NOW_MS + 60_000);
        assert_eq!(record.value, b"v3");
        // A first put is version 1.
        let (mut op, _) = Operation::start(&c, &put("new", "v", None), 8, t0).expect("valid");
        let Next::Store(record) = done_after_old_key(&mut op, t0, &me) else {
            panic!("stores");
        };
        assert_eq!(record.seq, 1);
        assert_eq!(
            record.expires_at_ms,
            NOW_MS + c.limits.record.default_ttl_ms
        );
    }

    #[test]
    fn rule_5_a_tombstone_lives_as_long_as_the_value_and_needs_a_value() {
        let t0 = Instant::now();
        let c = config();
        let me = keypair();
        let remove = DhtRequest::Remove { key: "k".into() };
        let (mut op, _) = Operation::start(&c, &remove, 8, t0).expect("valid");
        op.on_copy(
            &signed(&me, "k", "v", 3, NOW_MS + 90_000).encode(),
            &c.limits.record,
            3,
            NOW_MS,
        );
        let Next::Store(tombstone) = op.on_lookup_done(t0, NOW_MS, &me, None) else {
            panic!("stores a tombstone");
        };
        assert!(tombstone.tombstone && tombstone.value.is_empty());
        assert_eq!(
            (tombstone.seq, tombstone.expires_at_ms),
            (4, NOW_MS + 90_000)
        );
        // Nothing to remove (no record, or already removed).
        let (mut op, _) = Operation::start(&c, &remove, 8, t0).expect("valid");
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, Some(&tombstone)),
            Next::Reply(Err(DhtError::Refused(why))) if why.contains("no record")
        ));
    }

    #[test]
    fn the_store_phase_answers_with_the_acknowledgements_and_its_own_path() {
        let t0 = Instant::now();
        let c = config();
        let me = keypair();
        let peer = keypair().public().to_peer_id();
        let (mut op, _) = Operation::start(&c, &put("k", "v", None), 8, t0).expect("valid");
        op.trace_mut().on_request(t0, peer);
        let Next::Store(record) = done_after_old_key(&mut op, t0, &me) else {
            panic!("stores");
        };
        op.on_store_started(record, t0);
        assert_eq!(op.trace().contacted(), 0, "a fresh path for the store");
        op.on_store_ack();
        op.on_store_ack();
        op.on_store_acks_reported(1);
        let later = t0 + web_time::Duration::from_millis(40);
        let Next::Reply(Ok(reply)) = op.on_lookup_done(later, NOW_MS, &me, None) else {
            panic!("a reply");
        };
        let DhtReply::Put {
            stored_at,
            seq,
            duration_ms,
            removed,
            ..
        } = &reply
        else {
            panic!("a put reply");
        };
        assert_eq!(
            (*stored_at, *seq, *duration_ms, *removed),
            (2, 1, 40, false)
        );
        let (outcome, trace) = op.finish(later, Ok(reply));
        assert!(outcome.is_ok() && trace.is_finished());
    }

    #[test]
    fn rule_6_a_provide_counts_the_peers_that_answered_its_lookup_at_most_k() {
        let t0 = Instant::now();
        let c = DhtConfig {
            replication_factor: 2,
            ..config()
        };
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Provide { key: "k".into() }, 8, t0).expect("valid");
        for _ in 0..3 {
            let peer = keypair().public().to_peer_id();
            op.trace_mut().on_request(t0, peer);
            op.trace_mut().on_reply(t0, peer, &[], false);
        }
        op.on_provided(c.replication_factor);
        let Next::Reply(Ok(DhtReply::Provide { stored_at, .. })) =
            op.on_lookup_done(t0, NOW_MS, &keypair(), None)
        else {
            panic!("a provide reply");
        };
        assert_eq!(stored_at, 2);
    }

    #[test]
    fn providers_found_are_listed_once() {
        let t0 = Instant::now();
        let me = keypair();
        let other = keypair().public().to_peer_id();
        let (mut op, _) =
            Operation::start(&config(), &DhtRequest::Providers { key: "k".into() }, 8, t0)
                .expect("valid");
        assert!(!op.on_providers([other, me.public().to_peer_id()], 3));
        assert!(!op.on_providers([other], 3));
        let Next::Reply(Ok(DhtReply::Providers { providers, .. })) =
            op.on_lookup_done(t0, NOW_MS, &me, None)
        else {
            panic!("a providers reply");
        };
        assert_eq!(providers.len(), 2);
        assert!(providers.iter().any(|p| p.mine));
    }

    #[test]
    fn rule_2_a_providers_lookup_may_stop_once_a_quorum_of_answers_named_providers() {
        let t0 = Instant::now();
        let me = keypair();
        let (a, b) = (
            keypair().public().to_peer_id(),
            keypair().public().to_peer_id(),
        );
        let (mut op, _) =
            Operation::start(&config(), &DhtRequest::Providers { key: "k".into() }, 8, t0)
                .expect("valid");
        assert!(!op.on_providers([a], 3), "one answer");
        assert!(
            !op.on_providers([], 3),
            "an answer naming nobody does not count"
        );
        assert!(!op.on_providers([a, b], 3), "two answers");
        assert!(op.on_providers([b], 3), "three answers: enough");
        let Next::Reply(Ok(DhtReply::Providers { providers, .. })) =
            op.on_lookup_done(t0, NOW_MS, &me, None)
        else {
            panic!("a providers reply");
        };
        assert_eq!(providers.len(), 2, "the union, each once");
        let (mut single, _) =
            Operation::start(&config(), &DhtRequest::Providers { key: "k".into() }, 8, t0)
                .expect("valid");
        assert!(
            single.on_providers([a], 1),
            "a quorum of one stops at the first"
        );
    }

    #[test]
    fn rule_7_hand_over_live_records_the_peer_is_close_to_and_no_more_than_the_bound() {
        let me = keypair();
        let mut held: Vec<SignedRecord> = (0..(MAX_HANDOVER + 10))
            .map(|i| signed(&me, &format!("k{i}"), "v", 1, NOW_MS + 60_000))
            .collect();
        held.push(signed(&me, "expired", "v", 1, NOW_MS - 1));
        // Close to every key but one.
        let handed = handover(&held, NOW_MS, |key| key != b"k3");
        assert_eq!(handed.len(), MAX_HANDOVER);
        assert!(handed.iter().all(|r| r.key != b"k3" && r.key != b"expired"));
        assert!(handover(&held, NOW_MS, |_| false).is_empty());
    }

    #[test]
    fn rule_9_records_live_under_the_namespace_and_keys_keep_the_users_length() {
        let t0 = Instant::now();
        let c = config();
        let max = c.limits.record.max_key_bytes - key::PREFIX.len();
        let (op, _) = Operation::start(&c, &put(&"k".repeat(max), "v", None), 8, t0).expect("fits");
        assert_eq!(op.key().len(), c.limits.record.max_key_bytes);
        assert!(op.key().starts_with(b"/tabmesh/"));
        let why = refused(Operation::start(
            &c,
            &put(&"k".repeat(max + 1), "v", None),
            8,
            t0,
        ));
        assert!(
            why.contains(&format!("{} bytes; at most {max}", max + 1)),
            "{why}"
        );
        // Typed in full, the namespace is not counted twice, nor taken for a key.
        let (op, _) = Operation::start(&c, &put("/tabmesh/k", "v", None), 8, t0).expect("valid");
        assert_eq!(op.key(), b"/tabmesh/k");
        let typed = format!("/tabmesh/{}", "k".repeat(max + 1));
        let why = refused(Operation::start(&c, &put(&typed, "v", None), 8, t0));
        assert!(why.contains(&format!("at most {max}")), "{why}");
        let why = refused(Operation::start(&c, &put("/tabmesh/", "v", None), 8, t0));
        assert!(why.contains("empty"), "{why}");
        // Provider keys are the user's, with the whole length.
        let provide = DhtRequest::Provide {
            key: "k".repeat(max + 1),
        };
        let (op, _) = Operation::start(&c, &provide, 8, t0).expect("fits");
        assert_eq!(op.key(), "k".repeat(max + 1).as_bytes());
        let (mut op, _) = Operation::start(&c, &provide, 8, t0).expect("fits");
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &keypair(), None),
            Next::Reply(_)
        ));
    }

    #[test]
    fn rule_9_a_get_that_finds_nothing_reads_the_old_key_once() {
        let t0 = Instant::now();
        let c = config();
        let (me, publisher) = (keypair(), keypair());
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        assert_eq!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Lookup(b"k".to_vec())
        );
        assert_eq!(op.lookup_key(), b"k");
        // Copies are checked against the key they were found under.
        let new = signed(&publisher, "k", "new", 2, NOW_MS + 60_000).encode();
        assert!(matches!(
            op.on_copy(&new, &c.limits.record, 3, NOW_MS),
            CopyVerdict::Refused(_)
        ));
        let old = signed_old(&publisher, "k", "old", 1, NOW_MS + 60_000).encode();
        assert!(matches!(
            op.on_copy(&old, &c.limits.record, 3, NOW_MS),
            CopyVerdict::Kept { .. }
        ));
        let Next::Reply(Ok(DhtReply::Get {
            key,
            record: Some(found),
            ..
        })) = op.on_lookup_done(t0, NOW_MS, &me, None)
        else {
            panic!("found under the old key");
        };
        assert_eq!((key.as_str(), found.key.as_str()), ("k", "k"));
        assert!(found.old_key && found.value.as_deref() == Some("old"));
        // Both lookups are on the path, the old one labelled.
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(8);
        let root = TraceContext::root(&mut rng);
        let spans = op.spans(root, "me", t0, SpanStatus::Ok, &mut rng, |_| 0);
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dht.get k",
                "dht.get_record k",
                "dht.get_record k (old key)"
            ]
        );
        // Found nowhere: one more lookup, not two.
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Lookup(_)
        ));
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Reply(Ok(DhtReply::Get { record: None, .. }))
        ));
    }

    #[test]
    fn rule_9_a_tombstone_under_the_new_key_hides_the_old_record() {
        let t0 = Instant::now();
        let c = config();
        let me = keypair();
        let removed =
            SignedRecord::sign(&me, key::kad_key("k"), Vec::new(), 3, NOW_MS + 60_000, true);
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        op.on_copy(&removed.encode(), &c.limits.record, 3, NOW_MS);
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Reply(Ok(DhtReply::Get { record: None, .. }))
        ));
    }

    #[test]
    fn rule_9_an_old_record_keeps_its_owner_and_its_version() {
        let t0 = Instant::now();
        let c = config();
        let (me, other) = (keypair(), keypair());
        // Another publisher's old record: the key is still theirs.
        let (mut op, _) = Operation::start(&c, &put("k", "mine", None), 8, t0).expect("valid");
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Lookup(_)
        ));
        let theirs = signed_old(&other, "k", "theirs", 1, NOW_MS + 60_000);
        op.on_copy(&theirs.encode(), &c.limits.record, 3, NOW_MS);
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Reply(Err(DhtError::Refused(_)))
        ));
        // Our own old record, held here: the put goes under the new key, one version above it.
        let (mut op, _) = Operation::start(&c, &put("k", "v5", None), 8, t0).expect("valid");
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Lookup(_)
        ));
        let ours = signed_old(&me, "k", "v4", 4, NOW_MS + 60_000);
        let Next::Store(record) = op.on_lookup_done(t0, NOW_MS, &me, Some(&ours)) else {
            panic!("stores");
        };
        assert_eq!((record.key, record.seq), (key::kad_key("k"), 5));
    }

    #[test]
    fn rule_9_a_peer_moves_its_own_old_records_under_the_namespace() {
        let (me, other) = (keypair(), keypair());
        let held = [
            signed_old(&me, "color", "blue", 3, NOW_MS + 60_000),
            signed_old(&me, "gone", "x", 1, NOW_MS - 1),
            signed_old(&other, "theirs", "x", 1, NOW_MS + 60_000),
            signed_old(&me, "both", "old", 1, NOW_MS + 60_000),
            signed(&me, "both", "new", 2, NOW_MS + 60_000),
        ];
        let moved = move_own_records(&held, &me, NOW_MS);
        assert_eq!(
            moved.len(),
            2,
            "only our live record with nothing under its new key"
        );
        // First the old key's tombstone (one version up, same expiry), then the moved record.
        let gone = &moved[0];
        assert_eq!(gone.key, b"color");
        assert!(gone.tombstone && gone.seq == 4 && gone.expires_at_ms == NOW_MS + 60_000);
        let record = &moved[1];
        assert_eq!(record.key, key::kad_key("color"));
        assert_eq!((record.value.as_slice(), record.seq), (&b"blue"[..], 3));
        assert_eq!(
            record.expires_at_ms,
            NOW_MS + 60_000,
            "the expiry does not move"
        );
        let raw = record.encode();
        assert!(
            record::check(
                &key::kad_key("color"),
                &raw,
                &config().limits.record,
                NOW_MS
            )
            .is_ok()
        );
    }

    #[test]
    fn rule_8_a_request_is_answered_by_its_deadline_with_what_it_has_or_why_not() {
        let t0 = Instant::now();
        let c = DhtConfig {
            op_timeout: web_time::Duration::from_secs(5),
            ..config()
        };
        let (me, publisher) = (keypair(), keypair());
        let local = me.public().to_peer_id();
        let (a, b) = (
            keypair().public().to_peer_id(),
            keypair().public().to_peer_id(),
        );
        let late = t0 + web_time::Duration::from_secs(5);
        // A get that asked two peers and heard from one, with nothing found: the reason.
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        assert_eq!(op.deadline(), late);
        op.trace_mut().on_request(t0, a);
        op.trace_mut().on_request(t0, b);
        op.trace_mut().on_reply(t0, a, &[], false);
        let why = op.on_deadline(late, NOW_MS, &local).unwrap_err();
        assert_eq!(
            why.to_string(),
            "no answer in 5 s while looking the key up: 1 of 2 peer(s) asked answered"
        );
        // With a copy in hand, that copy.
        let copy = signed(&publisher, "k", "v", 1, NOW_MS + 60_000).encode();
        op.on_copy(&copy, &c.limits.record, 3, NOW_MS);
        assert!(matches!(
            op.on_deadline(late, NOW_MS, &local),
            Ok(DhtReply::Get {
                record: Some(_),
                copies: 1,
                ..
            })
        ));
        // A put still looking the key up has no answer yet.
        let (op, _) = Operation::start(&c, &put("k", "v", None), 8, t0).expect("valid");
        assert!(matches!(
            op.on_deadline(late, NOW_MS, &local),
            Err(DhtError::TimedOut { during, .. }) if during.contains("before storing")
        ));
        // A store some peers acknowledged is a success at that many.
        let (mut op, _) = Operation::start(&c, &put("k", "v", None), 8, t0).expect("valid");
        let ours = signed(&me, "k", "v0", 1, NOW_MS + 60_000);
        let Next::Store(record) = op.on_lookup_done(t0, NOW_MS, &me, Some(&ours)) else {
            panic!("stores");
        };
        op.on_store_started(record, t0);
        op.trace_mut().on_request(t0, a);
        assert!(matches!(
            op.on_deadline(late, NOW_MS, &local),
            Err(DhtError::TimedOut { during, answered: 0, asked: 1, .. }) if during == "storing the record"
        ));
        op.on_store_ack();
        assert!(matches!(
            op.on_deadline(late, NOW_MS, &local),
            Ok(DhtReply::Put { stored_at: 1, .. })
        ));
    }

    #[test]
    fn rule_8_a_store_no_peer_acknowledged_is_a_failure() {
        let t0 = Instant::now();
        let c = config();
        let me = keypair();
        let (mut op, _) = Operation::start(&c, &put("k", "v", None), 8, t0).expect("valid");
        let ours = signed(&me, "k", "v0", 1, NOW_MS + 60_000);
        let Next::Store(record) = op.on_lookup_done(t0, NOW_MS, &me, Some(&ours)) else {
            panic!("stores");
        };
        op.on_store_started(record, t0);
        op.trace_mut()
            .on_request(t0, keypair().public().to_peer_id());
        assert!(matches!(
            op.on_lookup_done(t0, NOW_MS, &me, None),
            Next::Reply(Err(DhtError::Failed(why))) if why.contains("none of the 1 peer(s)")
        ));
    }

    #[test]
    fn rule_9_the_old_key_is_not_looked_up_when_the_deadline_would_cut_it_short() {
        let t0 = Instant::now();
        let c = config();
        let me = keypair();
        let late = t0 + (c.op_timeout - c.query_timeout) + web_time::Duration::from_millis(1);
        let (mut op, _) =
            Operation::start(&c, &DhtRequest::Get { key: "k".into() }, 8, t0).expect("valid");
        assert!(matches!(
            op.on_lookup_done(late, NOW_MS, &me, None),
            Next::Reply(Ok(DhtReply::Get { record: None, .. }))
        ));
    }
}
