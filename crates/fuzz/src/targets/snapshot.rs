//! Chandy-Lamport snapshots: channel frames (markers among them), the snapshot protocol's
//! messages, and the in-order inbox that peer-chosen sequence numbers drive.

use std::collections::BTreeMap;
use tabmesh_core::snapshot::channel::Inbox;
use tabmesh_core::snapshot::frame::ChannelFrame;

use tabmesh_core::snapshot::state::{InFlight, PeerState};
use tabmesh_core::snapshot::wire::{PartWire, SnapshotReply, SnapshotRequest};
use tabmesh_core::snapshot::{IncomingChannel, LocalSnapshot, SnapshotId};

use super::{outcome, peer};
use crate::{Outcome, Script, Target};

pub(super) const FRAME: Target = Target {
    name: "snapshot_frame",
    about: "a frame of a snapshot channel: marker, token transfer, gossip, acknowledgement",
    run: frame,
    seeds: frames,
};

pub(super) const WIRE: Target = Target {
    name: "snapshot_wire",
    about: "a snapshot protocol request (first byte even) or reply (odd), parts included",
    run: wire,
    seeds: wires,
};

pub(super) const INBOX: Target = Target {
    name: "snapshot_inbox",
    about: "a channel's inbox fed peer-chosen epochs and sequence numbers",
    run: inbox,
    seeds: inbox_scripts,
};

fn frame(data: &[u8]) -> Outcome {
    let decoded = ChannelFrame::decode(data);
    if let Ok(found) = &decoded {
        let again = ChannelFrame::decode(&found.encode()).expect("a frame re-encodes");
        assert_eq!(&again, found, "a frame survives encode and decode");
    }
    outcome(&decoded)
}

fn frames() -> Vec<Vec<u8>> {
    let marker = format!(r#"M{{"snapshot":"{}","seq":3}}"#, peer(1).to_base58());
    vec![
        marker.into_bytes(),
        [b"T".as_slice(), &40u64.to_be_bytes()].concat(),
        [
            b"G".as_slice(),
            &7u64.to_be_bytes(),
            br#"{"msg_type":"PING"}"#,
        ]
        .concat(),
        [b"A".as_slice(), &7u64.to_be_bytes()].concat(),
    ]
}

fn wire(data: &[u8]) -> Outcome {
    let Some((&which, bytes)) = data.split_first() else {
        return Outcome::Refused;
    };
    let sender = peer(2);
    if which.is_multiple_of(2) {
        let decoded = SnapshotRequest::decode(bytes);
        if let Ok(request) = &decoded {
            if let SnapshotRequest::Part { part } = request {
                let _ = part.clone().into_part(sender);
            }
            if let Ok(again) = request.encode() {
                let again = SnapshotRequest::decode(&again).expect("a request re-encodes");
                assert_eq!(&again, request, "a request survives encode and decode");
            }
        }
        outcome(&decoded)
    } else {
        let decoded = SnapshotReply::decode(bytes);
        if let Ok(reply) = &decoded {
            if let SnapshotReply::State { part } = reply {
                let _ = part.clone().into_part(sender);
            }
            if let Ok(again) = reply.encode() {
                let again = SnapshotReply::decode(&again).expect("a reply re-encodes");
                assert_eq!(&again, reply, "a reply survives encode and decode");
            }
        }
        outcome(&decoded)
    }
}

fn wires() -> Vec<Vec<u8>> {
    let (a, b) = (peer(1), peer(2));
    let part = LocalSnapshot {
        id: SnapshotId {
            initiator: a,
            seq: 2,
        },
        peer: b,
        state: PeerState {
            name: "tab".into(),
            connections: vec![a.to_base58()],
            ..PeerState::default()
        },
        sent: BTreeMap::from([(a, 3)]),
        incoming: vec![IncomingChannel {
            from: a,
            received: 1,
            in_flight: vec![
                InFlight::Tokens { amount: 4 },
                InFlight::Gimps {
                    summary: "PRIME 127".into(),
                },
            ],
            closed_by_marker: true,
        }],
        complete: true,
        missing: Vec::new(),
    };
    let part = Box::new(PartWire::from_part(&part));
    let tagged = |tag: u8, bytes: Vec<u8>| [vec![tag], bytes].concat();
    let request = |r: SnapshotRequest| r.encode().expect("seeds are small");
    let reply = |r: SnapshotReply| r.encode().expect("seeds are small");
    vec![
        tagged(0, request(SnapshotRequest::State)),
        tagged(0, request(SnapshotRequest::Part { part: part.clone() })),
        tagged(1, reply(SnapshotReply::Taken)),
        tagged(
            1,
            reply(SnapshotReply::Refused {
                reason: "busy".into(),
            }),
        ),
        tagged(1, reply(SnapshotReply::State { part })),
    ]
}

/// A script of `[op][epoch][seq]…`: op even accepts frame `seq` of `epoch`, odd begins `epoch`
/// at `seq`. Frames carry their own `(epoch, seq)`, so the order handed on can be checked.
fn inbox(data: &[u8]) -> Outcome {
    const MAX_EARLY: usize = 8;
    let mut inbox = Inbox::new(MAX_EARLY);
    let mut script = Script::new(data);
    let mut epoch = 0u64;
    let mut last: Option<(u64, u64)> = None;
    while !script.is_empty() {
        let op = script.byte();
        let at = u64::from(script.byte() % 4);
        let seq = u64::from(script.u16() % 64);
        let (handed, _broke) = if op.is_multiple_of(2) {
            inbox.accept(at, seq, (at, seq))
        } else {
            (Vec::new(), inbox.begin(at, seq))
        };
        if at > epoch {
            epoch = at;
        }
        for frame in handed {
            assert_eq!(
                frame.0, epoch,
                "only frames of the current epoch are handed on"
            );
            if let Some(previous) = last.filter(|p| p.0 == frame.0) {
                assert!(
                    frame.1 > previous.1,
                    "{frame:?} handed on after {previous:?}"
                );
            }
            last = Some(frame);
        }
        assert!(
            inbox.waiting() <= MAX_EARLY,
            "the inbox holds at most its bound"
        );
    }
    Outcome::Accepted
}

fn inbox_scripts() -> Vec<Vec<u8>> {
    let step = |op: u8, epoch: u8, seq: u16| {
        let [hi, lo] = seq.to_be_bytes();
        [op, epoch, hi, lo]
    };
    vec![
        [step(0, 1, 1), step(0, 1, 3), step(0, 1, 2), step(0, 1, 2)].concat(),
        [step(1, 1, 5), step(0, 1, 6), step(0, 2, 1), step(0, 1, 7)].concat(),
        (1..=12).flat_map(|s| step(0, 1, s * 2)).collect(),
    ]
}
