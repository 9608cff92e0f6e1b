//! The DHT's promises, checked on small simulated networks (real libp2p Kademlia swarms over the
//! in-memory transport): lookups find what was put, records outlive their publisher and churn,
//! joining peers receive what they are responsible for, and expiry, quotas and ownership hold.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tabmesh_core::dht::{DhtConfig, DhtError, DhtReply, DhtRequest};
use tabmesh_dht_sim::{SimConfig, SimPeer, build_network, run};
use web_time::Instant;

fn dht_config() -> DhtConfig {
    DhtConfig {
        periodic_bootstrap: None,
        ..DhtConfig::default()
    }
}

fn put(key: &str, value: &str) -> DhtRequest {
    DhtRequest::Put {
        key: key.into(),
        value: value.into(),
        ttl_ms: None,
    }
}

async fn get_value(peer: &SimPeer, key: &str) -> Option<String> {
    match peer.request(DhtRequest::Get { key: key.into() }).await {
        Ok(DhtReply::Get { record, .. }) => record.and_then(|r| r.value),
        other => panic!("get {key}: {other:?}"),
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_find_every_record_with_and_without_churn() {
    let mut config = SimConfig::new(24, 7);
    config.records = 10;
    config.lookups = 40;
    config.churn = 0.25;
    let report = run(&config).await.unwrap();
    assert_eq!(report.puts_ok, 10);
    assert_eq!(report.stable.found, 40, "{report:?}");
    assert!(report.churn.success_rate >= 0.95, "{report:?}");
    assert_eq!(report.left, 6);
    // The observed lookup paths are there (they are read from libp2p's internals).
    assert!(report.stable.rounds.mean >= 1.0, "{report:?}");
    assert!(report.stable.contacted.mean >= 1.0, "{report:?}");
    assert!(report.stored_at.mean >= 10.0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_outlives_its_publisher() {
    let mut rng = StdRng::seed_from_u64(3);
    let peers = build_network(12, 3, 4, &dht_config(), &mut rng)
        .await
        .unwrap();
    let reply = peers[5].request(put("city", "Lyon")).await.unwrap();
    assert!(
        matches!(reply, DhtReply::Put { stored_at, .. } if stored_at >= 5),
        "{reply:?}"
    );
    peers[5].leave().await;
    assert_eq!(get_value(&peers[9], "city").await.as_deref(), Some("Lyon"));
    assert_eq!(get_value(&peers[0], "city").await.as_deref(), Some("Lyon"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_peer_receives_the_records_it_is_responsible_for() {
    let mut rng = StdRng::seed_from_u64(4);
    let config = dht_config();
    let peers = build_network(6, 2, 4, &config, &mut rng).await.unwrap();
    for i in 0..8 {
        peers[i % 6]
            .request(put(&format!("k{i}"), "v"))
            .await
            .unwrap();
    }
    // With fewer than k peers, a newcomer is among the k closest to every key.
    let newcomer = SimPeer::spawn(libp2p::identity::Keypair::generate_ed25519(), &config).unwrap();
    newcomer.add_peer(&peers[0]).await;
    newcomer.join().await;
    let all_handed = eventually(Duration::from_secs(20), || async {
        newcomer.held_keys().await.len() == 8
    })
    .await;
    assert!(all_handed, "holds {:?}", newcomer.held_keys().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_everywhere() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut config = dht_config();
    config.limits.record.min_ttl_ms = 100;
    let peers = build_network(5, 2, 4, &config, &mut rng).await.unwrap();
    peers[1]
        .request(DhtRequest::Put {
            key: "brief".into(),
            value: "soon gone".into(),
            ttl_ms: Some(800),
        })
        .await
        .unwrap();
    assert_eq!(
        get_value(&peers[3], "brief").await.as_deref(),
        Some("soon gone")
    );
    let gone = eventually(Duration::from_secs(15), || async {
        get_value(&peers[3], "brief").await.is_none()
            && peers.iter().len() > 0
            && futures::future::join_all(peers.iter().map(|p| p.held_keys()))
                .await
                .iter()
                .all(|held| !held.contains(&"brief".to_owned()))
    })
    .await;
    assert!(gone, "an expired record was still served or held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_ownership_and_limits_are_enforced() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut config = dht_config();
    config.limits.max_records_per_publisher = 2;
    let peers = build_network(5, 2, 4, &config, &mut rng).await.unwrap();
    peers[1].request(put("a", "1")).await.unwrap();
    peers[1].request(put("b", "2")).await.unwrap();
    let third = peers[1].request(put("c", "3")).await;
    assert!(
        matches!(&third, Err(DhtError::Refused(reason)) if reason.contains("quota")),
        "{third:?}"
    );
    // Another publisher cannot overwrite or remove the key.
    let foreign = peers[2].request(put("a", "mine now")).await;
    assert!(
        matches!(&foreign, Err(DhtError::Refused(reason)) if reason.contains("held by")),
        "{foreign:?}"
    );
    let foreign_remove = peers[2]
        .request(DhtRequest::Remove { key: "a".into() })
        .await;
    assert!(
        matches!(foreign_remove, Err(DhtError::Refused(_))),
        "{foreign_remove:?}"
    );
    assert_eq!(get_value(&peers[4], "a").await.as_deref(), Some("1"));
    // The publisher can update and remove it.
    peers[1].request(put("a", "one")).await.unwrap();
    assert_eq!(get_value(&peers[3], "a").await.as_deref(), Some("one"));
    peers[1]
        .request(DhtRequest::Remove { key: "a".into() })
        .await
        .unwrap();
    assert_eq!(get_value(&peers[2], "a").await, None);
    // Oversized input is refused with the reason.
    let big = peers[0].request(put("big", &"x".repeat(5000))).await;
    assert!(
        matches!(&big, Err(DhtError::Refused(reason)) if reason.contains("4096")),
        "{big:?}"
    );
}

/// A peer running plain libp2p Kademlia (no checks) sends garbage and a tampered copy of a
/// stored record straight to one of ours: both are refused, the stored record is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_garbage_records_from_the_wire_are_refused() {
    use futures::StreamExt;
    use libp2p::StreamProtocol;
    use libp2p::kad::{self, Quorum, Record, RecordKey, store::MemoryStore};
    use libp2p::swarm::SwarmEvent;

    let mut rng = StdRng::seed_from_u64(8);
    let peers = build_network(3, 2, 4, &dht_config(), &mut rng)
        .await
        .unwrap();
    let stored = peers[0].request(put("motd", "hello")).await.unwrap();
    let target = peers[1].clone();
    let held = target.held_keys().await;
    assert!(
        held.contains(&"motd".to_owned()),
        "{held:?} after {stored:?}"
    );

    let mut rogue = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(tabmesh_dht_sim::memory_transport)
        .unwrap()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let config = kad::Config::new(StreamProtocol::new(tabmesh_core::protocol::KADEMLIA));
            let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), config);
            kad.set_mode(Some(kad::Mode::Server));
            kad
        })
        .unwrap()
        .build();
    rogue
        .behaviour_mut()
        .add_address(&target.peer_id, target.addr.clone());
    // A tampered copy: the stored envelope with its last signature byte flipped and a new value.
    let garbage = Record::new(RecordKey::new(&"junk"), b"not a tabmesh record".to_vec());
    let mut forged = tabmesh_core::dht::record::SignedRecord::sign(
        &libp2p::identity::Keypair::generate_ed25519(),
        tabmesh_core::dht::key::kad_key("motd"),
        b"pwned".to_vec(),
        99,
        tabmesh_node::platform::unix_now_ms() + 60_000,
        false,
    );
    forged.publisher = peers[0].peer_id;
    let forged = Record::new(RecordKey::new(&forged.key), forged.encode());
    for record in [garbage, forged] {
        rogue
            .behaviour_mut()
            .put_record_to(record, std::iter::once(target.peer_id), Quorum::One);
    }
    // Drive the rogue until both puts are answered (Kademlia acknowledges even refused puts).
    let mut answered = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while answered < 2 {
        tokio::select! {
            event = rogue.select_next_some() => {
                if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::PutRecord(_), ..
                }) = event {
                    answered += 1;
                }
            }
            () = &mut deadline => panic!("the rogue's puts were never answered"),
        }
    }
    let held = target.held().await;
    assert_eq!(held, vec![("motd".to_owned(), "hello".to_owned())]);
    assert_eq!(get_value(&peers[1], "motd").await.as_deref(), Some("hello"));
    assert_eq!(get_value(&peers[2], "motd").await.as_deref(), Some("hello"));
}
