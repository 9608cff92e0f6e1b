//! GIMPS gossip messages: the exercise's six fields, a signature, and strict decoding.
//!
//! On the wire a message is one JSON object, for example
//! `{"msg_type":"PRIME","msg_id":7,"msg_forwarder":"12D3…","msg_originator":"12D3…","ttl":2,
//! "data":"4423","signature":"…"}`. `data` is empty for `PING` and `PONG` and holds the exponent
//! `p` of the Mersenne prime `2^p - 1` for `PRIME`.
//!
//! A `PRIME` is signed by its originator over what no hop may change (type, originator, id,
//! exponent); forwarders pass the signature on and rewrite only `msg_forwarder` and `ttl`. The
//! originator's public key is inside its (Ed25519, identity-multihash) peer id, so a receiver
//! checks the signature with nothing but the message: credit cannot be forged.
//!
//! Cooperative mode adds `TESTED`: a signed coverage report whose `data` is
//! `"<below>:<p1>,<p2>,…"`: every prime exponent below `below` is known tested by its
//! originator's view, and `p1, p2, …` were tested since its last report.
//!
//! A `PRIME` or `TESTED` also names, under its signature, the peers its originator sent it to
//! itself: `"sent_to":["<last 8 characters of a peer id>",…]` (at most [`MAX_SENT_TO`]).
//! Forwarders skip those peers, which already have it first-hand, so in a full mesh a message
//! costs one copy per peer instead of one per pair. Being signed, the list cannot be stretched by
//! a forwarder to keep a message from peers that lack it; the originator can only short its own
//! message. A message without the list is forwarded to everyone, as in the exercise.
//!
//! A traced message also carries `"traceparent":"00-<trace id>-<span id>-01"` (W3C Trace
//! Context): the span on the sender that sent it. It is not signed, as every hop replaces it with
//! its own span; a malformed one makes the message malformed.

use libp2p_identity::{Keypair, PeerId};

use crate::names::inline_public_key;
use crate::trace::TraceContext;
use serde::{Deserialize, Serialize};

/// Largest encoded message accepted: a PRIME with two peer ids and a signature is ~400 bytes; a
/// full `TESTED` report naming [`MAX_SENT_TO`] recipients ~1.5 KB.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Most recipients a message names in `sent_to` (an originator with more peers names the first
/// ones; the others are still sent to, and forwarded to).
pub const MAX_SENT_TO: usize = 32;

/// Characters of a peer id (its base58 tail) that name it in `sent_to`, as the dashboard shows it.
pub const SENT_TO_CHARS: usize = 8;

const SIGNING_DOMAIN: &[u8] = b"tabmesh/gimps/prime/v1";

/// The three message types of the exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MsgType {
    /// Liveness probe; answered with a `PONG`.
    Ping,
    /// Answer to a `PING`.
    Pong,
    /// Announcement of a Mersenne prime `2^data - 1`.
    Prime,
    /// Cooperative mode: which exponents have been tested (`data` = `below:p1,p2,…`).
    Tested,
}

impl MsgType {
    /// The name on the wire: `PING`, `PONG`, `PRIME`, `TESTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Prime => "PRIME",
            Self::Tested => "TESTED",
        }
    }
}

/// Most exponents in one `TESTED` report (keeps a report well under the size limit).
pub const MAX_REPORTED: usize = 100;

/// The content of a `TESTED` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Every prime exponent below this was tested, as far as the originator knows.
    pub below: u32,
    /// Exponents tested since the originator's previous report.
    pub tested: Vec<u32>,
}

/// A decoded, well-formed message (its signature is checked by [`GossipMessage::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMessage {
    /// Type.
    pub msg_type: MsgType,
    /// The originator's counter value for this message.
    pub msg_id: u64,
    /// The peer that handed us the message.
    pub msg_forwarder: PeerId,
    /// The peer that created the message.
    pub msg_originator: PeerId,
    /// Remaining hops.
    pub ttl: u8,
    /// The exponent, for `PRIME`.
    pub exponent: Option<u32>,
    /// The coverage report, for `TESTED`.
    pub coverage: Option<Coverage>,
    /// The peers the originator sent it to itself (tails of their ids), for `PRIME` and
    /// `TESTED`; signed.
    pub sent_to: Vec<String>,
    /// The originator's signature, for `PRIME`.
    pub signature: Vec<u8>,
    /// The sending span, when the message is traced.
    pub trace: Option<TraceContext>,
}

/// Why bytes from a peer are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Longer than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    Oversized(usize),
    /// Not the expected JSON object.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The signature does not verify against the originator's key.
    #[error("bad signature on PRIME from {0}")]
    BadSignature(PeerId),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    msg_type: MsgType,
    msg_id: u64,
    msg_forwarder: String,
    msg_originator: String,
    ttl: u8,
    data: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sent_to: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

impl GossipMessage {
    /// A `PING` or `PONG` from `me`.
    pub fn probe(msg_type: MsgType, msg_id: u64, me: PeerId, ttl: u8) -> Self {
        Self {
            msg_type,
            msg_id,
            msg_forwarder: me,
            msg_originator: me,
            ttl,
            exponent: None,
            coverage: None,
            sent_to: Vec::new(),
            signature: Vec::new(),
            trace: None,
        }
    }

    /// A signed `PRIME` announcing `2^exponent - 1`, originated by the owner of `key`, who sends
    /// it to `sent_to` itself (the first [`MAX_SENT_TO`] are named).
    pub fn prime(key: &Keypair, msg_id: u64, exponent: u32, ttl: u8, sent_to: &[PeerId]) -> Self {
        let me = key.public().to_peer_id();
        let mut msg = Self {
            msg_type: MsgType::Prime,
            msg_id,
            msg_forwarder: me,
            msg_originator: me,
            ttl,
            exponent: Some(exponent),
            coverage: None,
            sent_to: sent_to_tags(sent_to),
            signature: Vec::new(),
            trace: None,
        };
        msg.sign(key);
        msg
    }

    /// A signed `TESTED` coverage report from the owner of `key`, who sends it to `sent_to`.
    pub fn tested(
        key: &Keypair,
        msg_id: u64,
        coverage: Coverage,
        ttl: u8,
        sent_to: &[PeerId],
    ) -> Self {
        let me = key.public().to_peer_id();
        let mut msg = Self {
            msg_type: MsgType::Tested,
            msg_id,
            msg_forwarder: me,
            msg_originator: me,
            ttl,
            exponent: None,
            coverage: Some(coverage),
            sent_to: sent_to_tags(sent_to),
            signature: Vec::new(),
            trace: None,
        };
        msg.sign(key);
        msg
    }

    fn sign(&mut self, key: &Keypair) {
        // Signing with an Ed25519 key cannot fail; other key types are not used by tabmesh.
        self.signature = key.sign(&self.signed_bytes()).unwrap_or_default();
    }

    /// The `data` field as sent.
    pub fn data(&self) -> String {
        match (&self.exponent, &self.coverage) {
            (Some(p), _) => p.to_string(),
            (None, Some(c)) => {
                let list: Vec<String> = c.tested.iter().map(u32::to_string).collect();
                format!("{}:{}", c.below, list.join(","))
            }
            (None, None) => String::new(),
        }
    }

    /// Whether the originator says it sent this message to `peer` itself.
    pub fn was_sent_to(&self, peer: &PeerId) -> bool {
        !self.sent_to.is_empty() && self.sent_to.contains(&sent_to_tag(peer))
    }

    /// The copy a forwarder sends on: same content and signature, new forwarder, one hop less.
    pub fn forwarded_by(&self, me: PeerId) -> Self {
        Self {
            msg_forwarder: me,
            ttl: self.ttl.saturating_sub(1),
            ..self.clone()
        }
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(96);
        bytes.extend_from_slice(SIGNING_DOMAIN);
        bytes.push(self.msg_type as u8);
        bytes.extend_from_slice(&self.msg_originator.to_bytes());
        bytes.extend_from_slice(&self.msg_id.to_be_bytes());
        bytes.extend_from_slice(self.data().as_bytes());
        if !self.sent_to.is_empty() {
            // `|` occurs in neither the data nor a tag, and tags have one length: the split
            // between them is unambiguous. Without a list, the bytes are those of before it.
            bytes.push(b'|');
            for tag in &self.sent_to {
                bytes.extend_from_slice(tag.as_bytes());
            }
        }
        bytes
    }

    /// Checks a `PRIME`'s or `TESTED`'s signature against the key embedded in the originator's
    /// peer id. `PING` and `PONG` are unsigned (they are never forwarded).
    pub fn verify(&self) -> Result<(), MessageError> {
        if matches!(self.msg_type, MsgType::Ping | MsgType::Pong) {
            return Ok(());
        }
        let key = inline_public_key(&self.msg_originator)
            .ok_or(MessageError::BadSignature(self.msg_originator))?;
        if key.verify(&self.signed_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(MessageError::BadSignature(self.msg_originator))
        }
    }

    /// The JSON wire form.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            msg_type: self.msg_type,
            msg_id: self.msg_id,
            msg_forwarder: self.msg_forwarder.to_base58(),
            msg_originator: self.msg_originator.to_base58(),
            ttl: self.ttl,
            data: self.data(),
            sent_to: self.sent_to.clone(),
            signature: crate::hex::encode(&self.signature),
            traceparent: self.trace.map(|t| t.traceparent()),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Parses and checks the shape of a message (not its signature, nor protocol rules).
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::Oversized(bytes.len()));
        }
        let malformed = |what: String| MessageError::Malformed(what);
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let peer = |s: &str, field: &str| {
            s.parse::<PeerId>()
                .map_err(|_| malformed(format!("{field} is not a peer id")))
        };
        let msg_forwarder = peer(&wire.msg_forwarder, "msg_forwarder")?;
        let msg_originator = peer(&wire.msg_originator, "msg_originator")?;
        let (exponent, coverage) = match wire.msg_type {
            MsgType::Ping | MsgType::Pong if wire.data.is_empty() => (None, None),
            MsgType::Ping | MsgType::Pong => {
                return Err(malformed("PING/PONG data must be empty".into()));
            }
            MsgType::Prime => match wire.data.parse::<u32>() {
                Ok(p) if p >= 2 => (Some(p), None),
                _ => {
                    return Err(malformed(format!(
                        "PRIME data {:?} is not an exponent",
                        wire.data
                    )));
                }
            },
            MsgType::Tested => (None, Some(parse_coverage(&wire.data).map_err(malformed)?)),
        };
        let signature = crate::hex::decode(&wire.signature)
            .ok_or_else(|| malformed("signature is not hex".into()))?;
        if matches!(wire.msg_type, MsgType::Prime | MsgType::Tested) && signature.is_empty() {
            let kind = format!("{:?}", wire.msg_type).to_uppercase();
            return Err(malformed(format!("{kind} without a signature")));
        }
        if !wire.sent_to.is_empty() && !matches!(wire.msg_type, MsgType::Prime | MsgType::Tested) {
            return Err(malformed("only PRIME and TESTED name recipients".into()));
        }
        if wire.sent_to.len() > MAX_SENT_TO {
            return Err(malformed(format!(
                "sent_to names {} peers (at most {MAX_SENT_TO})",
                wire.sent_to.len()
            )));
        }
        if let Some(bad) = wire.sent_to.iter().find(|t| !is_sent_to_tag(t)) {
            return Err(malformed(format!(
                "sent_to entry {bad:?} is not the last {SENT_TO_CHARS} characters of a peer id"
            )));
        }
        let trace = wire
            .traceparent
            .as_deref()
            .map(TraceContext::parse)
            .transpose()
            .map_err(|e| malformed(e.to_string()))?;
        Ok(Self {
            msg_type: wire.msg_type,
            msg_id: wire.msg_id,
            msg_forwarder,
            msg_originator,
            ttl: wire.ttl,
            exponent,
            coverage,
            sent_to: wire.sent_to,
            signature,
            trace,
        })
    }
}

/// How `sent_to` names `peer`: the last [`SENT_TO_CHARS`] characters of its id.
pub fn sent_to_tag(peer: &PeerId) -> String {
    let text = peer.to_base58();
    text[text.len().saturating_sub(SENT_TO_CHARS)..].to_owned()
}

fn sent_to_tags(peers: &[PeerId]) -> Vec<String> {
    peers.iter().take(MAX_SENT_TO).map(sent_to_tag).collect()
}

fn is_sent_to_tag(tag: &str) -> bool {
    const BASE58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    tag.len() == SENT_TO_CHARS && tag.chars().all(|c| BASE58.contains(c))
}

/// Parses `below:p1,p2,…`: `below` at least 2, at most [`MAX_REPORTED`] exponents, each prime.
fn parse_coverage(data: &str) -> Result<Coverage, String> {
    let (below, list) = data
        .split_once(':')
        .ok_or_else(|| format!("TESTED data {data:?} is not below:p1,p2,…"))?;
    let below: u32 = below
        .parse()
        .ok()
        .filter(|b| *b >= 2)
        .ok_or_else(|| format!("TESTED bound {below:?} is not an exponent"))?;
    let mut tested = Vec::new();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        let p: u32 = item
            .parse()
            .map_err(|_| format!("TESTED entry {item:?} is not a number"))?;
        if !super::lucas_lehmer::is_prime(p) {
            return Err(format!("TESTED entry {p} is not a prime exponent"));
        }
        tested.push(p);
        if tested.len() > MAX_REPORTED {
            return Err(format!("TESTED lists more than {MAX_REPORTED} exponents"));
        }
    }
    Ok(Coverage { below, tested })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).expect("32 bytes")
    }

    #[test]
    fn a_prime_round_trips_and_verifies() {
        let k = key(1);
        let msg = GossipMessage::prime(&k, 7, 4423, 2, &[]);
        let bytes = msg.encode();
        assert!(bytes.len() < MAX_MESSAGE_BYTES / 2, "{} bytes", bytes.len());
        let back = GossipMessage::decode(&bytes).unwrap();
        assert_eq!(back, msg);
        back.verify().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(r#""msg_type":"PRIME""#) && text.contains(r#""data":"4423""#),
            "{text}"
        );
    }

    #[test]
    fn a_trace_context_travels_unsigned_and_a_malformed_one_is_refused() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut msg = GossipMessage::prime(&key(1), 7, 4423, 2, &[]);
        msg.trace = Some(TraceContext::root(&mut rng));
        let bytes = msg.encode();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""traceparent":"00-"#));
        let back = GossipMessage::decode(&bytes).unwrap();
        assert_eq!(back, msg);
        // A hop replaces the context: the signature does not cover it.
        let mut hop = back.forwarded_by(key(2).public().to_peer_id());
        hop.trace = Some(TraceContext::root(&mut rng));
        hop.verify().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let bad = text.replace(r#""traceparent":"00-"#, r#""traceparent":"01-"#);
        let err = GossipMessage::decode(bad.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("traceparent"), "{err}");
        let short = text.replacen(r#"-01""#, r#"-1""#, 1);
        assert!(GossipMessage::decode(short.as_bytes()).is_err());
    }

    #[test]
    fn the_recipients_named_travel_signed_and_bad_lists_are_refused() {
        let origin = key(1);
        let to: Vec<PeerId> = (2..=4).map(|s| key(s).public().to_peer_id()).collect();
        let msg = GossipMessage::prime(&origin, 7, 4423, 2, &to);
        let text = String::from_utf8(msg.encode()).unwrap();
        let tag = sent_to_tag(&to[0]);
        assert_eq!(tag.len(), SENT_TO_CHARS);
        assert!(to[0].to_base58().ends_with(&tag));
        assert!(text.contains(&format!(r#""sent_to":["{tag}","#)), "{text}");
        let back = GossipMessage::decode(text.as_bytes()).unwrap();
        assert_eq!(back, msg);
        back.verify().unwrap();
        assert!(to.iter().all(|p| back.was_sent_to(p)));
        assert!(!back.was_sent_to(&key(5).public().to_peer_id()));
        // The list is signed: dropping a name spoils the signature as adding one does.
        let mut shorter = back.clone();
        shorter.sent_to.pop();
        assert!(shorter.verify().is_err());
        // A message without a list signs the bytes it always did.
        GossipMessage::prime(&origin, 7, 4423, 2, &[])
            .verify()
            .unwrap();
        // At most MAX_SENT_TO are named, and a full report still fits.
        let many: Vec<PeerId> = (0..40u8)
            .map(|s| key(100 + s).public().to_peer_id())
            .collect();
        let coverage = Coverage {
            below: 99_991,
            tested: (0..MAX_REPORTED as u32).map(|_| 999_983).collect(),
        };
        let report = GossipMessage::tested(&origin, 8, coverage, 2, &many);
        assert_eq!(report.sent_to.len(), MAX_SENT_TO);
        let bytes = report.encode();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
        GossipMessage::decode(&bytes).unwrap().verify().unwrap();

        let cases = [
            (text.replace(&tag, "short"), "not the last 8"),
            (text.replace(&tag, "0OIl0OIl"), "not the last 8"),
            (
                text.replace(
                    r#""sent_to":["#,
                    &format!(r#""sent_to":[{}"#, r#""abcdefgh","#.repeat(MAX_SENT_TO)),
                ),
                "at most",
            ),
        ];
        for (input, says) in cases {
            let err = GossipMessage::decode(input.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(says), "{input}: {err}");
        }
        let me = origin.public().to_peer_id().to_base58();
        let ping = format!(
            r#"{{"msg_type":"PING","msg_id":1,"msg_forwarder":"{me}","msg_originator":"{me}","ttl":0,"data":"","sent_to":["{tag}"]}}"#
        );
        let err = GossipMessage::decode(ping.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("only PRIME and TESTED"), "{err}");
    }

    #[test]
    fn forwarding_keeps_the_signature_valid() {
        let origin = key(1);
        let relay_peer = key(2).public().to_peer_id();
        let fwd = GossipMessage::prime(&origin, 1, 127, 2, &[]).forwarded_by(relay_peer);
        assert_eq!((fwd.ttl, fwd.msg_forwarder), (1, relay_peer));
        fwd.verify().unwrap();
    }

    #[test]
    fn forged_credit_and_changed_exponents_fail_verification() {
        let thief = key(3);
        let victim = key(4).public().to_peer_id();
        // The thief claims the victim found it... signing with its own key.
        let mut forged = GossipMessage::prime(&thief, 1, 9941, 2, &[]);
        forged.msg_originator = victim;
        assert_eq!(forged.verify(), Err(MessageError::BadSignature(victim)));
        // ...or takes the victim's announcement and bumps the exponent.
        let mut bumped = GossipMessage::prime(&key(4), 1, 9689, 2, &[]);
        bumped.exponent = Some(9941);
        assert!(bumped.verify().is_err());
    }

    #[test]
    fn malformed_and_oversized_input_is_rejected_with_a_reason() {
        let me = key(1).public().to_peer_id().to_base58();
        let cases = [
            ("not json".to_owned(), "malformed"),
            (
                format!(
                    r#"{{"msg_type":"PING","msg_id":1,"msg_forwarder":"{me}","msg_originator":"x","ttl":0,"data":""}}"#
                ),
                "msg_originator",
            ),
            (
                format!(
                    r#"{{"msg_type":"PING","msg_id":1,"msg_forwarder":"{me}","msg_originator":"{me}","ttl":0,"data":"5"}}"#
                ),
                "must be empty",
            ),
            (
                format!(
                    r#"{{"msg_type":"PRIME","msg_id":1,"msg_forwarder":"{me}","msg_originator":"{me}","ttl":0,"data":"-5","signature":"00"}}"#
                ),
                "not an exponent",
            ),
            (
                format!(
                    r#"{{"msg_type":"PRIME","msg_id":1,"msg_forwarder":"{me}","msg_originator":"{me}","ttl":0,"data":"5"}}"#
                ),
                "without a signature",
            ),
            (
                format!(
                    r#"{{"msg_type":"HELLO","msg_id":1,"msg_forwarder":"{me}","msg_originator":"{me}","ttl":0,"data":""}}"#
                ),
                "malformed",
            ),
            (
                format!(
                    r#"{{"msg_type":"PING","msg_id":1,"msg_forwarder":"{me}","msg_originator":"{me}","ttl":300,"data":""}}"#
                ),
                "malformed",
            ),
            (
                format!(
                    r#"{{"msg_type":"PING","msg_id":1,"msg_forwarder":"{me}","msg_originator":"{me}","ttl":0,"data":"","extra":1}}"#
                ),
                "unknown field",
            ),
        ];
        for (input, says) in cases {
            let err = GossipMessage::decode(input.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(says), "{input}: {err}");
        }
        let huge = vec![b'{'; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            GossipMessage::decode(&huge),
            Err(MessageError::Oversized(MAX_MESSAGE_BYTES + 1))
        );
    }
}
