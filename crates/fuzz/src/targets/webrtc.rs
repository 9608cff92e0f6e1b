//! The WebRTC transport: signaling messages on the relayed stream, and the frames of every data
//! channel (protobuf with varint length prefixes), through the state machines they drive.

use std::time::{Duration, Instant};

use tabmesh_webrtc::framing::{Frame, FrameDecoder, StreamAction, StreamClose};
use tabmesh_webrtc::pb;
use tabmesh_webrtc::signaling::{
    Role, SignalKind, SignalingDecoder, SignalingMessage, SignalingSession,
};

use crate::{Outcome, Script, Target};

pub(super) const SIGNALING: Target = Target {
    name: "webrtc_signaling",
    about: "the signaling stream's bytes, in chunks, through a dialer's or listener's session",
    run: signaling,
    seeds: signaling_scripts,
};

pub(super) const FRAMES: Target = Target {
    name: "webrtc_frames",
    about: "a data channel's messages, through the frame decoder and the stream-closing rules",
    run: frames,
    seeds: frame_scripts,
};

pub(super) const PB: Target = Target {
    name: "webrtc_pb",
    about: "the protobuf reader under both: varints, length prefixes, fields",
    run: protobuf,
    seeds: protobufs,
};

/// `[role][op][chunk]…`: op 0 feeds a chunk of the stream to the decoder and its messages to
/// the session; the others are the browser's events.
fn signaling(data: &[u8]) -> Outcome {
    let mut script = Script::new(data);
    let role = if script.byte().is_multiple_of(2) {
        Role::Dialer
    } else {
        Role::Listener
    };
    let start = Instant::now();
    let mut session = SignalingSession::new(role, start, Duration::from_secs(10));
    let mut decoder = SignalingDecoder::default();
    let mut accepted = false;
    while !script.is_empty() {
        let op = script.byte() % 8;
        let chunk = script.chunk();
        let text = String::from_utf8_lossy(chunk).into_owned();
        let _actions = match op {
            0..=2 => match decoder.push(chunk) {
                Ok(messages) => {
                    let mut actions = Vec::new();
                    for message in messages {
                        accepted = true;
                        let mut again = SignalingDecoder::default();
                        assert_eq!(
                            again.push(&message.encode()).as_deref(),
                            Ok(std::slice::from_ref(&message)),
                            "a signaling message survives encode and decode"
                        );
                        actions.extend(session.on_message(message));
                    }
                    actions
                }
                Err(error) => {
                    decoder = SignalingDecoder::default();
                    session.on_malformed(error)
                }
            },
            3 => session.on_local_offer(text),
            4 => session.on_local_answer(text),
            5 => session.on_local_candidate((!chunk.is_empty()).then_some(text)),
            6 => session.on_connected(),
            _ => session.on_timeout(start + Duration::from_secs(u64::from(chunk.len() as u8 % 16))),
        };
        if session.is_done() {
            assert_eq!(
                session.poll_timeout(),
                None,
                "a finished session sets no timer"
            );
        }
    }
    if accepted {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

fn signaling_scripts() -> Vec<Vec<u8>> {
    let message = |kind, data: &str| {
        SignalingMessage {
            kind,
            data: data.to_owned(),
        }
        .encode()
    };
    let op = |op: u8, chunk: &[u8]| {
        let len = u8::try_from(chunk.len()).expect("seed chunks are short");
        [&[op, len], chunk].concat()
    };
    let offer = message(SignalKind::Offer, "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n");
    let candidate = message(
        SignalKind::IceCandidate,
        r#"{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0"}"#,
    );
    let answer = message(SignalKind::Answer, "v=0\r\n");
    vec![
        // A listener: an offer split over two reads, a candidate, our answer, connected.
        [
            vec![1],
            op(0, &offer[..5]),
            op(0, &offer[5..]),
            op(0, &candidate),
            op(4, b"v=0\r\n"),
            op(6, b""),
        ]
        .concat(),
        // A dialer: our offer, a candidate before the answer, the answer.
        [
            vec![0],
            op(3, b"v=0\r\n"),
            op(0, &candidate),
            op(0, &answer),
            op(5, b""),
        ]
        .concat(),
    ]
}

/// `[op][chunk]…`: op 0–3 is a data-channel message (the frames it completes go to the
/// stream), the others are our own closing calls and time passing.
fn frames(data: &[u8]) -> Outcome {
    let mut script = Script::new(data);
    let start = Instant::now();
    let mut decoder = FrameDecoder::default();
    let mut stream = StreamClose::new();
    let mut read_closed = false;
    let mut accepted = false;
    while !script.is_empty() {
        let op = script.byte() % 8;
        let chunk = script.chunk();
        let actions = match op {
            0..=3 => match decoder.push(chunk) {
                Ok(frames) => {
                    let mut actions = Vec::new();
                    for frame in frames {
                        accepted = true;
                        let mut again = FrameDecoder::default();
                        assert_eq!(
                            again.push(&frame.encode()).as_deref(),
                            Ok(std::slice::from_ref(&frame)),
                            "a frame survives encode and decode"
                        );
                        actions.extend(stream.on_frame(frame));
                    }
                    actions
                }
                // The driver resets the stream on a malformed frame.
                Err(_) => stream.reset(),
            },
            4 => stream.close_write(start),
            5 => stream.close_read(),
            6 => stream.reset(),
            _ => stream.on_timeout(start + Duration::from_secs(u64::from(chunk.len() as u8))),
        };
        for action in actions {
            match action {
                StreamAction::Deliver(_) => {
                    assert!(!read_closed, "nothing is delivered once reading closed");
                }
                StreamAction::ReadClosed | StreamAction::Reset => read_closed = true,
                StreamAction::Send(frame) => {
                    assert!(frame.flag.is_some(), "the closing rules send only flags");
                }
                StreamAction::WriteClosed | StreamAction::CloseChannel => {}
            }
        }
    }
    if accepted {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

fn frame_scripts() -> Vec<Vec<u8>> {
    use tabmesh_webrtc::framing::Flag;
    let op = |op: u8, chunk: &[u8]| {
        let len = u8::try_from(chunk.len()).expect("seed chunks are short");
        [&[op, len], chunk].concat()
    };
    let data = Frame::data(b"hello".to_vec()).encode();
    let fin = Frame::flag(Flag::Fin).encode();
    let fin_ack = Frame::flag(Flag::FinAck).encode();
    let stop = Frame::flag(Flag::StopSending).encode();
    let reset = Frame::flag(Flag::Reset).encode();
    vec![
        [
            op(0, &data[..2]),
            op(1, &data[2..]),
            op(2, &fin),
            op(4, b""),
            op(3, &fin_ack),
        ]
        .concat(),
        [
            op(0, &data),
            op(5, b""),
            op(0, &data),
            op(1, &stop),
            op(7, b""),
        ]
        .concat(),
        [op(4, b""), op(7, &[0; 40]), op(0, &reset)].concat(),
    ]
}

/// The reader functions directly, on the whole input.
fn protobuf(data: &[u8]) -> Outcome {
    if let Ok(Some((value, used))) = pb::get_varint(data) {
        assert!((1..=10).contains(&used), "a varint is 1 to 10 bytes");
        let mut again = Vec::new();
        pb::put_varint(&mut again, value);
        assert_eq!(pb::get_varint(&again), Ok(Some((value, again.len()))));
    }
    if let Ok(Some((body, used))) = pb::split_frame(data, 1024) {
        assert!(
            body.len() <= 1024 && used <= data.len(),
            "a frame stays within its input"
        );
    }
    match pb::fields(data) {
        Ok(_) => Outcome::Accepted,
        Err(_) => Outcome::Refused,
    }
}

fn protobufs() -> Vec<Vec<u8>> {
    let mut varint = Vec::new();
    pb::put_varint_field(&mut varint, 1, u64::MAX);
    let mut body = Vec::new();
    pb::put_varint_field(&mut body, 1, 300);
    pb::put_bytes_field(&mut body, 2, b"data");
    // Field 3, wire type 1 (8 bytes), skipped by the readers.
    let fixed = [[0x19].as_slice(), &[0; 8]].concat();
    vec![varint, body, fixed]
}
