//! GIMPS gossip: the messages, and the node's rules fed a stream of them.

use tabmesh_core::gimps::message::{Coverage, GossipMessage, MsgType};
use tabmesh_core::gimps::node::{GossipConfig, GossipNode};
use tabmesh_core::trace::{SpanId, TraceContext, TraceId};
use tabmesh_core::{Duration, Instant};

use super::{key, outcome, peer};
use crate::{Outcome, Script, Target};

pub(super) const MESSAGE: Target = Target {
    name: "gimps_message",
    about: "a gossip message (JSON: PING, PONG, signed PRIME and TESTED, traceparent)",
    run: message,
    seeds: messages,
};

pub(super) const NODE: Target = Target {
    name: "gimps_node",
    about: "the gossip rules fed messages from three peers over time",
    run: node,
    seeds: node_scripts,
};

fn message(data: &[u8]) -> Outcome {
    let decoded = GossipMessage::decode(data);
    if let Ok(msg) = &decoded {
        // The signature may or may not hold; checking it must not fail in any other way.
        let _ = msg.verify();
        let again = GossipMessage::decode(&msg.encode())
            .expect("a decoded message re-encodes to a decodable one");
        assert_eq!(&again, msg, "a message survives encode and decode");
    }
    outcome(&decoded)
}

fn messages() -> Vec<Vec<u8>> {
    let origin = key(2);
    let mut traced = GossipMessage::prime(&origin, 9, 127, 4, &[]);
    traced.trace = Some(TraceContext {
        trace_id: TraceId([7; 16]),
        span_id: SpanId([9; 8]),
        sampled: true,
    });
    vec![
        GossipMessage::probe(MsgType::Ping, 1, peer(1), 3).encode(),
        GossipMessage::probe(MsgType::Pong, 2, peer(1), 3).encode(),
        GossipMessage::prime(&origin, 3, 127, 4, &[]).encode(),
        GossipMessage::prime(&origin, 4, 521, 1, &[peer(1), peer(3)])
            .forwarded_by(peer(3))
            .encode(),
        GossipMessage::tested(
            &origin,
            5,
            Coverage {
                below: 100,
                tested: vec![89, 97],
            },
            4,
            &[peer(1)],
        )
        .encode(),
        traced.encode(),
    ]
}

/// A script of deliveries: `[sender % 3][milliseconds later][length: u16][bytes]…`.
fn node(data: &[u8]) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let mut node = GossipNode::new(key(1), GossipConfig::default(), start, now);
    let senders = [peer(2), peer(3), peer(4)];
    for sender in senders {
        node.on_peer_connected(now, sender);
    }
    let mut script = Script::new(data);
    let mut accepted = false;
    while !script.is_empty() {
        let from = senders[usize::from(script.byte()) % senders.len()];
        now += Duration::from_millis(u64::from(script.byte()) * 50);
        let len = usize::from(script.u16());
        let bytes = script.take(len);
        accepted |= GossipMessage::decode(bytes).is_ok();
        let _ = node.on_message(now, from, bytes);
        let _ = node.on_tick(now);
        let _ = node.view(now);
    }
    if accepted {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

fn node_scripts() -> Vec<Vec<u8>> {
    let script = |entries: &[(u8, Vec<u8>)]| {
        let mut out = Vec::new();
        for (sender, bytes) in entries {
            out.push(*sender);
            out.push(1);
            let len = u16::try_from(bytes.len()).expect("seeds are small");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    };
    let seeds = messages();
    vec![
        script(&[(0, seeds[0].clone()), (1, seeds[2].clone())]),
        script(&[
            (2, seeds[4].clone()),
            (0, seeds[2].clone()),
            (1, seeds[2].clone()),
        ]),
    ]
}
