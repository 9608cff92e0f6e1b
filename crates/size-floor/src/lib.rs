//! The network stack a tab runs, alone: the same transports (WebSocket to the relay, relay
//! circuits, our `/webrtc`, each with Noise and yamux, built by the same
//! [`build_swarm`](tabmesh_node::platform::build_swarm)) and the same libp2p behaviours
//! (relay client, identify, ping, Kademlia, the WebRTC signaling, libp2p-stream and a
//! request-response behaviour per protocol that uses one), with none of tabmesh's protocol
//! rules, views or UI.
//!
//! `cargo xtask bench --only size` builds it as it builds the web app and prints its size
//! beside the app's: what the libp2p stack weighs as a tab uses it, and so what is tabmesh's
//! own. Nothing serves it; its one export dials a relay and logs what happens, so that the
//! optimiser keeps what a tab keeps.

#[cfg(target_arch = "wasm32")]
mod stack {
    use futures::StreamExt;
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{Multiaddr, StreamProtocol, identify, kad, ping, relay, request_response};
    use tabmesh_node::gimps::codec::GossipCodec;
    use tabmesh_node::services::codec::ServiceCodec;
    use wasm_bindgen::prelude::*;

    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
    struct Stack {
        relay: relay::client::Behaviour,
        identify: identify::Behaviour,
        ping: ping::Behaviour,
        kad: kad::Behaviour<kad::store::MemoryStore>,
        signaling: libp2p::swarm::behaviour::toggle::Toggle<tabmesh_webrtc::Behaviour>,
        streams: libp2p_stream::Behaviour,
        gossip: request_response::Behaviour<GossipCodec>,
        services: request_response::Behaviour<ServiceCodec>,
        trace: request_response::Behaviour<ServiceCodec>,
        snapshot: request_response::Behaviour<ServiceCodec>,
    }

    fn error(e: impl std::fmt::Display) -> JsValue {
        JsValue::from_str(&e.to_string())
    }

    /// Dials the relay at `relay` (with its `/p2p`), asks it for peers and a few records, sends
    /// a request of each kind to every peer it meets and logs every event to the console.
    #[wasm_bindgen]
    pub fn start(relay: String) -> Result<(), JsValue> {
        let relay: Multiaddr = relay.parse().map_err(error)?;
        let key = libp2p::identity::Keypair::generate_ed25519();
        let full = |name: &'static str| {
            [(
                StreamProtocol::new(name),
                request_response::ProtocolSupport::Full,
            )]
        };
        let mut swarm = tabmesh_node::platform::build_swarm(key, |key, relay, webrtc| {
            let local = key.public().to_peer_id();
            Ok(Stack {
                relay,
                identify: identify::Behaviour::new(identify::Config::new(
                    "/tabmesh/size-floor".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                kad: kad::Behaviour::new(local, kad::store::MemoryStore::new(local)),
                signaling: webrtc.map(|w| w.signaling).into(),
                streams: libp2p_stream::Behaviour::new(),
                gossip: request_response::Behaviour::new(full("/floor/gossip"), Default::default()),
                services: request_response::Behaviour::new(
                    full("/floor/services"),
                    Default::default(),
                ),
                trace: request_response::Behaviour::new(full("/floor/trace"), Default::default()),
                snapshot: request_response::Behaviour::new(
                    full("/floor/snapshot"),
                    Default::default(),
                ),
            })
        })
        .map_err(error)?;
        swarm.dial(relay).map_err(error)?;
        let mut incoming = swarm
            .behaviour()
            .streams
            .new_control()
            .accept(StreamProtocol::new("/floor/channel"))
            .map_err(error)?
            .fuse();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let event = futures::select! {
                    event = swarm.select_next_some() => event,
                    stream = incoming.select_next_some() => {
                        web_sys_log(&format!("stream from {}", stream.0));
                        continue;
                    }
                };
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } = &event {
                    let stack = swarm.behaviour_mut();
                    stack.services.send_request(peer_id, vec![1]);
                    stack.trace.send_request(peer_id, vec![2]);
                    stack.snapshot.send_request(peer_id, vec![3]);
                    let key = kad::RecordKey::new(&peer_id.to_bytes());
                    stack.kad.get_record(key.clone());
                    let _ = stack
                        .kad
                        .put_record(kad::Record::new(key, vec![4]), kad::Quorum::One);
                    let _ = stack.kad.bootstrap();
                }
                web_sys_log(&format!("{event:?}"));
            }
        });
        Ok(())
    }

    fn web_sys_log(line: &str) {
        #[wasm_bindgen]
        extern "C" {
            #[wasm_bindgen(js_namespace = console)]
            fn log(s: &str);
        }
        log(line);
    }
}
