//! libp2p Kademlia configured for tabmesh, and the filter every inbound record passes.
//!
//! Every peer (tab, native node, relay, simulated peer) builds its Kademlia here: our protocol
//! name, k-replication with periodic replication and republication, server mode (peers behind
//! the relay are reachable through their circuit address), and filtered inserts: a record or
//! provider record another peer sends is stored only through [`accept_inbound`], which applies
//! the core's checks (signature, limits, expiry, ownership, quotas).

use std::num::NonZeroUsize;

use libp2p::kad;
use libp2p::{PeerId, StreamProtocol};
use tabmesh_core::dht::DhtConfig;
use tabmesh_core::dht::record::key_text;
use tabmesh_core::protocol;
use web_time::Duration;

use super::observe::ObservedKad;
use super::store::{KadStore, StoreBackend};

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
    /// Whether the sender broke a rule (forged or malformed input), rather than losing an
    /// honest race.
    pub violation: bool,
}

/// Handles an inbound Kademlia request at `now_ms`: stores what passes the checks, refuses the
/// rest.
pub fn accept_inbound(
    kad: &mut ObservedKad,
    now_ms: u64,
    request: kad::InboundRequest,
) -> InboundNote {
    match request {
        kad::InboundRequest::PutRecord {
            source,
            record: Some(record),
            ..
        } => {
            let key = key_text(record.key.as_ref());
            match kad
                .store_mut()
                .accept_record(now_ms, record.key.as_ref(), &record.value, source)
            {
                Ok(stored) => InboundNote {
                    peer: Some(source),
                    summary: format!("PUT_VALUE {key}: {stored:?}").to_lowercase(),
                    refused: None,
                    record: true,
                    violation: false,
                },
                Err(refusal) => InboundNote {
                    peer: Some(source),
                    summary: format!("PUT_VALUE {key} refused: {refusal}"),
                    refused: Some(refusal.to_string()),
                    record: true,
                    violation: refusal.is_violation(),
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
                    violation: false,
                },
                Err(refusal) => InboundNote {
                    peer,
                    summary: format!("ADD_PROVIDER {key} refused: {refusal}"),
                    refused: Some(refusal.to_string()),
                    record: false,
                    violation: refusal.is_violation(),
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
                violation: false,
            }
        }
    }
}
