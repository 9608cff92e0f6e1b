//! What the DHT panel shows: records and provider records held, the routing table as
//! k-buckets, the path of the latest lookup, counters and limits.

use std::collections::BTreeMap;

use libp2p::kad::{self, KBucketKey, PutRecordContext, QueryInfo};
use tabmesh_core::dht::record::key_text;
use tabmesh_core::dht::{
    BucketView, DhtCounters, DhtSection, ProviderView, RecordView, RoutingPeerView,
};
use tabmesh_core::names::peer_name;
use web_time::Instant;

use super::Behaviour;
use crate::platform::unix_now_ms;

impl Behaviour {
    /// The `dht` section of the view.
    pub fn view(&mut self) -> DhtSection {
        let now = Instant::now();
        let now_ms = unix_now_ms();
        let local = self.local;
        let store = self.kad.store_mut().local();
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
                // Our own entries have no expiry (Kademlia renews them while we provide).
                expires_in_ms: (e.expires_at_ms != u64::MAX)
                    .then(|| e.expires_at_ms.saturating_sub(now_ms)),
            })
            .collect();
        let (routing_table, routing_table_size) = self.routing_view();
        let last_lookup = self
            .ops
            .values()
            .filter(|r| r.reply.is_some())
            .max_by_key(|r| r.op.started())
            .map(|r| r.op.trace())
            .or(self.last_lookup.as_ref())
            .map(|t| t.view(now));
        DhtSection {
            records,
            providers,
            routing_table,
            routing_table_size,
            last_lookup,
            running_lookups: self.ops.len(),
            queries: self.queries_by_kind(),
            counters: DhtCounters {
                bootstraps_skipped: self.kad.skipped_bootstraps(),
                ..self.counters.clone()
            },
            config: (&self.config).into(),
        }
    }

    /// Kademlia's queries in flight, by kind.
    fn queries_by_kind(&self) -> BTreeMap<String, u64> {
        let mut kinds = BTreeMap::new();
        for query in self.kad.iter_queries() {
            *kinds
                .entry(query_kind(query.info()).to_owned())
                .or_default() += 1;
        }
        kinds
    }

    /// The routing table as k-buckets, nearest first, and its size.
    fn routing_view(&mut self) -> (Vec<BucketView>, usize) {
        let local_key = KBucketKey::from(self.local);
        let mut buckets = Vec::new();
        let mut size = 0;
        for bucket in self.kad.kbuckets() {
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
            size += peers.len();
            let index = peers[0].0.ilog2().unwrap_or(0);
            buckets.push(BucketView {
                index,
                peers: peers.into_iter().map(|(_, p)| p).collect(),
            });
        }
        buckets.sort_by_key(|b| b.index);
        (buckets, size)
    }
}

/// What a Kademlia query is for, in a word or two.
fn query_kind(info: &QueryInfo) -> &'static str {
    match info {
        QueryInfo::Bootstrap { .. } => "bootstrap",
        QueryInfo::GetClosestPeers { .. } => "closest peers",
        QueryInfo::GetProviders { .. } => "get providers",
        QueryInfo::AddProvider { .. } => "provide",
        QueryInfo::GetRecord { .. } => "get record",
        QueryInfo::PutRecord { context, .. } => match context {
            PutRecordContext::Publish => "put record",
            PutRecordContext::Republish => "republish",
            PutRecordContext::Replicate => "replicate",
            PutRecordContext::Custom => "hand over",
        },
    }
}
