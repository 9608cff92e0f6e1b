//! What a protocol module tells the rest of the node: facts to route, and lines for the log.
//!
//! Two paths, each one way:
//! - [`Report`]: the few facts that cross protocol boundaries, emitted as the behaviour's
//!   events and routed by the node in one place (`Node::on_report`): a violation goes to the
//!   misbehaviour ledger, the relay's identity and a peer's identify information go to the
//!   protocols that need them. A behaviour never hands a libp2p event back for someone else to
//!   interpret.
//! - [`WireSink`]: the node's one Event log, which every behaviour writes its lines into and
//!   the node alone reads. Log lines are not swarm events: each event makes the swarm poll the
//!   behaviours again, and with a line per ping, identify exchange and Kademlia request that
//!   cost tabs measurably in join time (the benchmark found it; see the README's history).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tabmesh_core::bootstrap::IceServer;
use tabmesh_core::dht::DhtRequest;
use tabmesh_core::snapshot::frame::ChannelFrame;
use tabmesh_core::wire_log::{Direction, Topic};
use web_time::Instant;

/// Lines waiting for the node at most; older ones are dropped first (the node reads them after
/// every swarm event, so only a stalled node loses any).
const MAX_PENDING_LINES: usize = 1024;

/// A line for the Event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireNote {
    /// When it happened.
    pub at: Instant,
    /// Which way it went.
    pub direction: Direction,
    /// What it is about.
    pub topic: Topic,
    /// The remote peer, if one is concerned.
    pub peer: Option<PeerId>,
    /// What happened, in a few words.
    pub summary: String,
}

/// The Event log's input, shared by the behaviours of one node (cheap to clone; `Send`, as the
/// simulation runs peers on threads).
#[derive(Debug, Clone)]
pub struct WireSink {
    /// `None`: nobody reads the lines, they are not kept.
    lines: Option<Arc<Mutex<VecDeque<WireNote>>>>,
}

impl Default for WireSink {
    fn default() -> Self {
        Self {
            lines: Some(Arc::default()),
        }
    }
}

impl WireSink {
    /// A sink that keeps nothing (a simulated peer, a program that prints its own output).
    pub fn discard() -> Self {
        Self { lines: None }
    }

    /// A line for something we sent.
    pub fn sent(&self, topic: Topic, peer: Option<PeerId>, summary: impl Into<String>) {
        self.push(Direction::Sent, topic, peer, summary.into());
    }

    /// A line for something we received.
    pub fn received(&self, topic: Topic, peer: Option<PeerId>, summary: impl Into<String>) {
        self.push(Direction::Received, topic, peer, summary.into());
    }

    /// A line for a local event about the wire.
    pub fn local(&self, topic: Topic, peer: Option<PeerId>, summary: impl Into<String>) {
        self.push(Direction::Local, topic, peer, summary.into());
    }

    fn push(&self, direction: Direction, topic: Topic, peer: Option<PeerId>, summary: String) {
        let Some(lines) = &self.lines else {
            return;
        };
        let note = WireNote {
            at: Instant::now(),
            direction,
            topic,
            peer,
            summary,
        };
        if let Ok(mut lines) = lines.lock() {
            if lines.len() >= MAX_PENDING_LINES {
                lines.pop_front();
            }
            lines.push_back(note);
        }
    }

    /// The lines written since the last call, oldest first.
    pub fn take(&self) -> Vec<WireNote> {
        self.lines
            .as_ref()
            .and_then(|lines| lines.lock().ok().map(|mut l| l.drain(..).collect()))
            .unwrap_or_default()
    }
}

/// A fact a behaviour reports for the rest of the node, or a request for another protocol.
#[derive(Debug)]
pub enum Report {
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
        /// Its agent (which implementation it runs).
        agent: String,
        /// Its listen addresses (checked to belong to it).
        listen_addrs: Vec<Multiaddr>,
        /// The protocols it speaks.
        protocols: Vec<StreamProtocol>,
    },
    /// An application message arrived from `peer` (liveness for the Peers panel).
    Heard(PeerId),
    /// `peer` answered on `connection` (its identify, or a ping's echo): the connection is in
    /// use at its end too, which a direct connection must show before the relayed one goes.
    Answered {
        /// The peer.
        peer: PeerId,
        /// The connection it answered on.
        connection: libp2p::swarm::ConnectionId,
    },
    /// A protocol finished a span of a trace: the node hands it to the tracing behaviour's
    /// store.
    Span(tabmesh_core::trace::Span),
    /// A protocol needs the DHT (the services look up providers and descriptors and announce
    /// their own): the node starts `request` on the DHT behaviour, which answers on `reply`.
    Dht {
        /// What to do.
        request: DhtRequest,
        /// Where the answer goes.
        reply: crate::dht::DhtReplySender,
    },
    /// Stop announcing that we provide `key` (the DHT forgets our provider record locally).
    StopProviding(String),
    /// GIMPS gossip for `to` (a message, or the acknowledgement of one): the node puts it on
    /// the ordered channel to `to`, so that snapshots cut it, or, when `to` has no channel,
    /// hands a message back to the gossip protocol's own transport.
    Gossip {
        /// The peer.
        to: PeerId,
        /// [`ChannelFrame::Gimps`] or [`ChannelFrame::GimpsAck`].
        frame: ChannelFrame,
    },
    /// Gossip (or an acknowledgement) arrived on the ordered channel from `from`: for the
    /// gossip protocol.
    GossipArrived {
        /// The peer.
        from: PeerId,
        /// [`ChannelFrame::Gimps`] or [`ChannelFrame::GimpsAck`].
        frame: ChannelFrame,
    },
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

/// What a transport said when a dial to one address failed: its error chain, without the
/// leading ": " left when the error's own text is empty and its cause follows.
pub fn transport_error_text(error: &libp2p::TransportError<std::io::Error>) -> String {
    error_chain(error).trim_start_matches([':', ' ']).to_owned()
}

/// An error with its sources, skipping sources whose text is already included.
pub fn error_chain(e: &dyn std::error::Error) -> String {
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
