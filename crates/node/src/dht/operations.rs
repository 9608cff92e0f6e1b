//! The user's DHT operations on Kademlia queries: each request is a
//! `tabmesh_core::dht::ops::Operation` (where its rules live and are tested), driven here by the
//! queries it asks for and by what they report; and the hand-over of records to peers that join
//! close to their keys.

use libp2p::PeerId;
use libp2p::kad::{self, KBucketKey, Quorum, RecordKey};
use tabmesh_core::dht::key;
use tabmesh_core::dht::ops::{self, CopyVerdict, Next, Operation, Query};
use tabmesh_core::dht::record::key_text;
use tabmesh_core::dht::{DhtError, DhtReply, DhtRequest};
use tabmesh_core::peers::millis;
use tabmesh_core::trace::{SpanStatus, TraceContext, TraceId};
use tabmesh_core::wire_log::Topic;
use web_time::Instant;

use super::{Behaviour, DhtReplySender, MAX_RUNNING_OPS, RpcObservation, Running, kad_record};
use crate::platform::unix_now_ms;
use crate::report::Report;
use libp2p::swarm::ToSwarm;

impl Behaviour {
    /// Starts a user request; the answer goes to `reply` when it is known.
    pub fn start(&mut self, request: DhtRequest, reply: DhtReplySender) {
        let now = Instant::now();
        let begun = if self.ops.len() >= MAX_RUNNING_OPS {
            Err(DhtError::Failed(format!(
                "too many operations running (at most {MAX_RUNNING_OPS}); try again shortly"
            )))
        } else {
            let known_peers = self.kad.kbuckets().map(|b| b.num_entries()).sum();
            Operation::start(&self.config, &request, known_peers, now)
                .and_then(|(op, query)| Ok((self.start_query(&op, query)?, op)))
        };
        match begun {
            Ok((query, op)) => {
                self.kad.watch(query);
                self.log_sent(format!("{} {}: lookup started", op.name(), request.key()));
                self.ops.insert(
                    query,
                    Running {
                        op,
                        reply: Some(reply),
                    },
                );
            }
            Err(error) => {
                self.log(
                    None,
                    format!("{} {}: {error}", request.name(), request.key()),
                );
                let _ = reply.send(Err(error));
            }
        }
    }

    /// Stops announcing that we provide `key`: our provider record goes from the local store
    /// (copies at other peers expire with their lifetime).
    pub fn stop_providing(&mut self, key: &str) {
        self.kad.stop_providing(&RecordKey::new(&key));
        self.log(None, format!("stopped providing {key}"));
    }

    fn start_query(&mut self, op: &Operation, query: Query) -> Result<kad::QueryId, DhtError> {
        let key = RecordKey::new(&op.key());
        Ok(match query {
            Query::GetRecord => self.kad.get_record(key),
            Query::GetProviders => self.kad.get_providers(key),
            Query::StartProviding => self.kad.start_providing(key).map_err(|_| {
                DhtError::Refused(
                    self.kad
                        .store_mut()
                        .take_last_refusal()
                        .map_or_else(|| "provider store full".to_owned(), |r| r.to_string()),
                )
            })?,
        })
    }

    /// Applies the request/reply observations of watched queries to their lookup paths.
    pub(super) fn absorb_observations(&mut self) {
        let observations: Vec<_> = self.kad.drain_observations().collect();
        for (at, observation) in observations {
            match observation {
                RpcObservation::Request { query, peer, kind } => {
                    if let Some(running) = self.ops.get_mut(&query) {
                        running.op.trace_mut().on_request(at, peer);
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
                    if Some(query) == self.discovery_query && Some(peer) == self.relay {
                        self.on_discovery_reply(query, &closer);
                    }
                    if let Some(running) = self.ops.get_mut(&query) {
                        running.op.trace_mut().on_reply(at, peer, &closer, found);
                        if kind == "PutRecordRes" {
                            running.op.on_store_ack();
                        }
                    }
                }
                RpcObservation::Failure {
                    query,
                    peer,
                    reason,
                } => {
                    if let Some(running) = self.ops.get_mut(&query) {
                        running.op.trace_mut().on_failure(at, peer, reason);
                    }
                }
            }
        }
    }

    pub(super) fn on_progress(
        &mut self,
        now: Instant,
        id: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
    ) {
        let Some(mut running) = self.ops.remove(&id) else {
            return;
        };
        let now_ms = unix_now_ms();
        let mut done = last;
        match result {
            kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                let limits = &self.config.limits.record;
                match running.op.on_copy(
                    &found.record.value,
                    limits,
                    self.config.get_quorum,
                    now_ms,
                ) {
                    CopyVerdict::Kept { quorum: true } => {
                        if let Some(mut query) = self.kad.query_mut(&id) {
                            query.finish();
                        }
                    }
                    CopyVerdict::Kept { quorum: false } => {}
                    CopyVerdict::Refused(reason) => self.log(found.peer, reason),
                }
            }
            kad::QueryResult::GetRecord(_) => done = true,
            kad::QueryResult::PutRecord(result) => {
                if let Err(
                    kad::PutRecordError::QuorumFailed { success, .. }
                    | kad::PutRecordError::Timeout { success, .. },
                ) = &result
                {
                    running.op.on_store_acks_reported(success.len());
                }
                done = true;
            }
            kad::QueryResult::StartProviding(_) => {
                // ADD_PROVIDER has no reply, and libp2p reports the query done before the
                // requests leave: they go to the k closest peers that answered the lookup.
                running.op.on_provided(self.config.replication_factor);
                done = true;
            }
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                if running.op.on_providers(providers, self.config.get_quorum)
                    && let Some(mut query) = self.kad.query_mut(&id)
                {
                    query.finish();
                }
            }
            kad::QueryResult::GetProviders(_) => done = true,
            _ => {}
        }
        if !done {
            self.ops.insert(id, running);
            return;
        }
        self.kad.unwatch(&id);
        let held = self
            .kad
            .store_mut()
            .local()
            .get_live(running.op.lookup_key(), now_ms)
            .map(|r| r.record.clone());
        match running
            .op
            .on_lookup_done(now, now_ms, &self.keypair, held.as_ref())
        {
            Next::Reply(outcome) => self.finish(now, running, outcome),
            Next::Lookup(old) => {
                self.log(
                    None,
                    format!(
                        "{}: nothing under {}; reading the old key",
                        running.op.name(),
                        key_text(running.op.key())
                    ),
                );
                let query = self.kad.get_record(RecordKey::new(&old));
                self.kad.watch(query);
                self.ops.insert(query, running);
            }
            Next::Store(record) => {
                if let Err(refusal) = self.kad.store_mut().put_own(now_ms, record.clone()) {
                    return self.finish(now, running, Err(DhtError::Refused(refusal.to_string())));
                }
                let kad_rec = kad_record(&record, &record.encode());
                // Rule 3: the lookup just made reached the closest peers; store there at once.
                let peers = self.closest_of(running.op.store_peers(), &kad_rec.key);
                let stored = if peers.is_empty() {
                    self.kad.put_record(kad_rec, Quorum::All)
                } else {
                    Ok(self
                        .kad
                        .put_record_to(kad_rec, peers.into_iter(), Quorum::All))
                };
                match stored {
                    Ok(query) => {
                        self.kad.watch(query);
                        running.op.on_store_started(record, now);
                        self.ops.insert(query, running);
                    }
                    Err(_) => {
                        let reason = self.kad.store_mut().take_last_refusal().map_or_else(
                            || "the local store refused it".to_owned(),
                            |r| r.to_string(),
                        );
                        self.finish(now, running, Err(DhtError::Refused(reason)));
                    }
                }
            }
        }
    }

    /// The `replication_factor` peers of `peers` closest to `key`.
    fn closest_of(&self, peers: &[PeerId], key: &RecordKey) -> Vec<PeerId> {
        let target = KBucketKey::new(key.clone());
        let mut peers = peers.to_vec();
        peers.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
        peers.dedup();
        peers.truncate(self.config.replication_factor);
        peers
    }

    /// Answers the operations whose deadline has passed with what they have (or why not), and
    /// finishes their queries (a lookup stops; a store still looking for the closest peers
    /// sends the record to those found so far): nobody waits longer than `op_timeout`, whatever
    /// the network does.
    pub(super) fn answer_overdue(&mut self, now: Instant) {
        let overdue: Vec<kad::QueryId> = self
            .ops
            .iter()
            .filter(|(_, r)| r.op.deadline() <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            let Some(running) = self.ops.remove(&id) else {
                continue;
            };
            if let Some(mut query) = self.kad.query_mut(&id) {
                query.finish();
            }
            self.kad.unwatch(&id);
            let outcome = running.op.on_deadline(now, unix_now_ms(), &self.local);
            self.finish(now, running, outcome);
        }
    }

    fn finish(&mut self, now: Instant, running: Running, outcome: Result<DhtReply, DhtError>) {
        let key = key::user_text(running.op.key());
        let summary = match &outcome {
            Ok(reply) => reply.summary(),
            Err(e) => e.to_string(),
        };
        self.log(None, format!("{key}: {summary}"));
        let outcome = match self.trace_operation(now, &running, &outcome) {
            Some(trace_id) => outcome.map(|reply| reply.traced(trace_id)),
            None => outcome,
        };
        let (outcome, trace) = running.op.finish(now, outcome);
        self.last_lookup = Some(trace);
        if let Some(reply) = running.reply {
            let _ = reply.send(outcome);
        }
    }

    /// Records the spans of a finished operation (when tracing), the id of its trace.
    fn trace_operation(
        &mut self,
        now: Instant,
        running: &Running,
        outcome: &Result<DhtReply, DhtError>,
    ) -> Option<TraceId> {
        let rng = self.tracer.as_mut()?;
        let root = TraceContext::root(rng);
        let status = match outcome {
            Ok(_) => SpanStatus::Ok,
            Err(e) => SpanStatus::Error(e.to_string()),
        };
        let (then, then_ms) = (Instant::now(), unix_now_ms());
        let wall = |t: Instant| then_ms.saturating_sub(millis(then.saturating_duration_since(t)));
        let me = self.local.to_base58();
        for span in running.op.spans(root, &me, now, status, rng, wall) {
            self.events
                .push_back(ToSwarm::GenerateEvent(Report::Span(span)));
        }
        Some(root.trace_id)
    }

    /// Hands `peer`, new in the routing table, the records it is now among the k closest for.
    pub(super) fn hand_over(&mut self, peer: PeerId) {
        let now_ms = unix_now_ms();
        let k = self.config.replication_factor;
        let held: Vec<_> = self
            .kad
            .store_mut()
            .local()
            .records()
            .map(|r| r.record.clone())
            .collect();
        let kad = &mut self.kad;
        let handed = ops::handover(&held, now_ms, |key| {
            let target = KBucketKey::new(RecordKey::new(&key));
            kad.get_closest_local_peers(&target)
                .take(k)
                .any(|key| *key.preimage() == peer)
        });
        for record in &handed {
            let kad_rec = kad_record(record, &record.encode());
            self.kad
                .put_record_to(kad_rec, std::iter::once(peer), Quorum::One);
        }
        if !handed.is_empty() {
            self.counters.handed_over += handed.len() as u64;
            self.wire.sent(
                Topic::Dht,
                Some(peer),
                format!(
                    "handed over {} record(s) to a peer that joined near their keys",
                    handed.len()
                ),
            );
        }
    }
}
