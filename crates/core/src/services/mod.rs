//! Services: typed request/reply services that peers offer, found through the DHT and called
//! from any peer, as in the MetaML platform.
//!
//! - [`shape`]: the shape of message data (a JSON Schema subset) and its check;
//! - [`descriptor`]: what a service declares, and the `svc/` keys it is announced under, with
//!   the rule that binds those records to the peer their key names;
//! - [`message`]: the request and reply of `/tabmesh/service/1.0.0`;
//! - [`calls`]: the caller's rules (provider choice, descriptor check, failover, deadlines);
//! - [`serving`]: the provider's rules (admission, bounds, queueing, counts);
//! - [`announce`]: which DHT entries announce an offer, renewed while it lasts;
//! - [`catalog`]: reading every service the network offers from the DHT;
//! - [`builtin`]: the services every peer can switch on.
//!
//! Like the rest of this crate it does no I/O and reads no clock.

pub mod announce;
pub mod builtin;
pub mod calls;
pub mod catalog;
pub mod descriptor;
pub mod message;
pub mod serving;
pub mod shape;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use calls::{CallError, CallRequest, Link};
pub use catalog::{Catalog, Listing, ProviderListing};
pub use descriptor::{Descriptor, MessageType};
pub use serving::Answerer;

/// The protocol name.
pub const PROTOCOL: &str = "/tabmesh/service/1.0.0";
/// Calls kept in the view.
pub const CALLS_SHOWN: usize = 50;

/// A service this peer offers, for display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferView {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Who answers.
    pub answerer: Answerer,
    /// Its message types.
    pub types: BTreeMap<String, MessageType>,
    /// Calls answered with data.
    pub served: u64,
    /// Calls refused before they ran.
    pub refused: u64,
    /// Calls whose handler failed or ran past the deadline.
    pub failed: u64,
    /// Calls running now.
    pub running: usize,
    /// Calls waiting now.
    pub waiting: usize,
}

/// A built-in service and whether it is switched on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltinView {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Whether this peer offers it.
    pub on: bool,
}

/// Which side of a call this peer was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallSide {
    /// We called.
    Made,
    /// We answered.
    Served,
}

/// One call, made or served, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// When it ended, ms since the node started.
    pub at_ms: u64,
    /// Our side.
    pub side: CallSide,
    /// The service.
    pub service: String,
    /// The message type.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The peer at the other end (the provider of a call made, the caller of a call served).
    pub peer: String,
    /// The hops the call took, caller first.
    pub route: Vec<String>,
    /// Time taken, ms.
    pub duration_ms: u64,
    /// Providers tried (calls made).
    pub attempts: u32,
    /// Whether it was answered with data.
    pub ok: bool,
    /// `ok`, or the error.
    pub outcome: String,
}

/// Call counts of one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCounters {
    /// Calls made.
    pub made: u64,
    /// Calls made that were answered.
    pub answered: u64,
    /// Calls made that failed.
    pub failed: u64,
    /// Calls served with data.
    pub served: u64,
    /// Calls refused or failed here.
    pub refused: u64,
    /// Unreadable or oversized requests and replies received (each a strike for its sender).
    #[serde(default)]
    pub malformed: u64,
}

/// The services section of a node's view.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServicesSection {
    /// What this peer offers.
    pub offered: Vec<OfferView>,
    /// The built-in services, on or off.
    pub builtins: Vec<BuiltinView>,
    /// The latest calls, newest last.
    pub calls: Vec<CallRecord>,
    /// Counts.
    pub counters: ServiceCounters,
    /// Calls of ours in flight.
    pub in_flight: usize,
}
