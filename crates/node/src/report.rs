//! What a protocol module tells the node: the one path from a behaviour to the rest.
//!
//! Every behaviour of a tabmesh peer emits [`Report`]s and nothing else. Most are lines for the
//! Event log; the others are the few facts that cross protocol boundaries, which the node
//! routes in one place (`Node::on_report`): a violation goes to the misbehaviour ledger, the
//! relay's identity and a peer's identify information go to the protocols that need them.
//! A behaviour never hands a libp2p event back for someone else to interpret.

use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tabmesh_core::bootstrap::IceServer;
use tabmesh_core::wire_log::{Direction, Topic};

/// A line for the Event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireNote {
    /// Which way it went.
    pub direction: Direction,
    /// What it is about.
    pub topic: Topic,
    /// The remote peer, if one is concerned.
    pub peer: Option<PeerId>,
    /// What happened, in a few words.
    pub summary: String,
}

/// What a behaviour reports.
#[derive(Debug, Clone)]
pub enum Report {
    /// A line for the Event log.
    Wire(WireNote),
    /// `peer` broke a rule of `topic`: one strike in the misbehaviour ledger.
    Misbehaved {
        /// The offender.
        peer: PeerId,
        /// The protocol whose rule it broke.
        topic: Topic,
        /// What it did.
        reason: String,
    },
    /// The relay is known (its bootstrap document was read).
    RelayKnown {
        /// Its peer id.
        peer: PeerId,
        /// The address we reach it at (ending in `/p2p/<id>`).
        addr: Multiaddr,
        /// STUN/TURN servers for direct connections.
        ice_servers: Vec<IceServer>,
    },
    /// A peer told us who it is (identify).
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its listen addresses (checked to belong to it).
        listen_addrs: Vec<Multiaddr>,
        /// The protocols it speaks.
        protocols: Vec<StreamProtocol>,
    },
    /// An application message arrived from `peer` (liveness for the Peers panel).
    Heard(PeerId),
}

impl Report {
    /// A log line for something we sent.
    pub fn sent(topic: Topic, peer: Option<PeerId>, summary: impl Into<String>) -> Self {
        Self::wire(Direction::Sent, topic, peer, summary)
    }

    /// A log line for something we received.
    pub fn received(topic: Topic, peer: Option<PeerId>, summary: impl Into<String>) -> Self {
        Self::wire(Direction::Received, topic, peer, summary)
    }

    /// A log line for a local event about the wire.
    pub fn local(topic: Topic, peer: Option<PeerId>, summary: impl Into<String>) -> Self {
        Self::wire(Direction::Local, topic, peer, summary)
    }

    fn wire(
        direction: Direction,
        topic: Topic,
        peer: Option<PeerId>,
        summary: impl Into<String>,
    ) -> Self {
        Self::Wire(WireNote {
            direction,
            topic,
            peer,
            summary: summary.into(),
        })
    }
}

/// `text`, cut to `max` characters with an ellipsis.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

/// An error with its sources, skipping sources whose text is already included.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
