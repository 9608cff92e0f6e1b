//! The targets, one module per protocol.

mod bootstrap;
mod dht;
mod gimps;
mod services;
mod snapshot;
mod trace;
mod webrtc;

use libp2p_identity::{Keypair, PeerId};

use crate::{Outcome, Target};

pub(crate) const ALL: &[Target] = &[
    gimps::MESSAGE,
    gimps::NODE,
    dht::RECORD,
    dht::STORE,
    dht::PROVIDER_ENTRY,
    services::REQUEST,
    services::REPLY,
    services::DESCRIPTOR,
    services::SHAPE,
    trace::CONTEXT,
    trace::MESSAGES,
    snapshot::FRAME,
    snapshot::WIRE,
    snapshot::INBOX,
    webrtc::SIGNALING,
    webrtc::FRAMES,
    webrtc::PB,
    bootstrap::DOCUMENT,
    bootstrap::HEX,
];

/// A fixed key, so that inputs replay the same way on every run.
fn key(seed: u8) -> Keypair {
    let mut bytes = [seed; 32];
    bytes[0] = 1;
    Keypair::ed25519_from_bytes(bytes).expect("32 bytes make an Ed25519 key")
}

fn peer(seed: u8) -> PeerId {
    key(seed).public().to_peer_id()
}

fn outcome<T, E>(result: &Result<T, E>) -> Outcome {
    if result.is_ok() {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}
