//! Protocol rules of a tabmesh peer, free of I/O, clocks and randomness of their own.
//!
//! Everything in this crate is a plain state machine in the style of `str0m` and
//! `iroh-gossip`'s `proto` module: time enters as an argument (`now: Instant`), decisions leave as
//! return values, and the only randomness is a seedable generator handed in by the caller. The
//! libp2p adapters in `tabmesh-node` read the clock once per event and apply what these types
//! decide, which keeps every rule here testable with injected time and no sleeps.
//!
//! - [`peers`]: the table of connected peers (relayed or direct, round-trip time, last heard,
//!   misbehaviour strikes) behind the UI's Peers panel.
//! - [`relay_link`]: the connection to the relay/bootstrap server, with reconnect backoff.
//! - [`discovery`]: when to ask the DHT for more peers.
//! - [`wire_log`]: the bounded log of what went over the wire.
//! - [`view`]: the serialisable snapshot that the UI renders and `window.tabmesh.state()` returns.
//! - [`bootstrap`]: the `/api/bootstrap` document shared by the relay and the peers.
//! - [`names`]: short and human-friendly names derived from peer ids.
//! - [`hex`]: lowercase hex for keys and signatures in text formats.
//! - [`gimps`]: the GIMPS-style gossip protocol (Mersenne prime search, TTL gossip, liveness).
//! - [`dht`]: the rules tabmesh adds to Kademlia: signed records, quotas, lookup paths.
//! - [`direct_upgrade`]: when to move a relayed peer to a direct connection, with backoff, and
//!   which connection to keep when there are several.
//! - [`dial_backoff`]: peers none of whose addresses answered are not dialed again for a while.
//! - [`ledger`]: the misbehaviour ledger every protocol reports violations to: strikes, bans
//!   that grow with repeat offences, bounded.
#![deny(missing_docs)]

pub mod bootstrap;
pub mod crossing_dials;
pub mod dht;
pub mod dial_backoff;
pub mod direct_upgrade;
pub mod discovery;
pub mod gimps;
pub mod hex;
pub mod ledger;
pub mod names;
pub mod peers;
pub mod perf;
pub mod relay_link;
pub mod services;
pub mod snapshot;
pub mod trace;
pub mod view;
pub mod wire_log;

pub use libp2p_identity::PeerId;
pub use multiaddr::Multiaddr;
pub use web_time::{Duration, Instant};

/// `items` as a map (a `BTreeMap`, or a JSON object), inserted one by one: the map `collect()`
/// would make (of equal keys the last stays). `collect()` into a `BTreeMap` sorts the items
/// first, with a sort compiled for each key, value and iterator type it is used with, some
/// 2–4 KB of the web app each; inserting reuses the map's own code. For maps that code reaching
/// the web app builds.
pub fn map_from<M: Default + Extend<(K, V)>, K, V>(items: impl IntoIterator<Item = (K, V)>) -> M {
    let mut map = M::default();
    map.extend(items);
    map
}

/// Protocol names and agent strings that every tabmesh peer and the relay agree on.
pub mod protocol {
    /// The Kademlia protocol of the tabmesh DHT. Our own name keeps tabmesh's DHT apart from
    /// the public IPFS DHT while staying wire-compatible with libp2p Kademlia.
    pub const KADEMLIA: &str = "/tabmesh/kad/1.0.0";
    /// The identify protocol version string announced by tabmesh peers.
    pub const IDENTIFY_VERSION: &str = "/tabmesh/0.1.0";
    /// Agent version prefix of browser peers.
    pub const AGENT_WEB: &str = "tabmesh-web";
    /// Agent version prefix of native peers.
    pub const AGENT_NATIVE: &str = "tabmesh-node";
    /// Agent version prefix of the relay.
    pub const AGENT_RELAY: &str = "tabmesh-relay";
}
