//! Signed DHT records: the value a Kademlia record carries in tabmesh, and how it is checked.
//!
//! Kademlia's wire format (`PUT_VALUE`/`GET_VALUE`) carries a key and opaque value bytes; the
//! `publisher` field beside them is unauthenticated, so any hop could claim any publisher. A
//! tabmesh record therefore puts a signed envelope in the value:
//!
//! ```text
//! "tmr1" | flags u8 | seq u64 | expires_at_ms u64 | publisher len u16 + peer id bytes
//!        | value len u32 + value | signature len u16 + signature            (big-endian)
//! ```
//!
//! The signature (Ed25519, by the key inlined in the publisher's peer id) covers a domain
//! separator, the Kademlia key and every field above but itself, so a record cannot be replayed
//! under another key, its expiry extended, or its publisher changed. `flags` bit 0 marks a
//! tombstone: "removed by its publisher", which overwrites stale copies of the value on every
//! peer that stored it (Kademlia itself has no remove operation).
//!
//! Expiry is absolute wall-clock time (Unix ms) so that every holder agrees when a record dies,
//! whoever replicated it and whenever.

use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};

use crate::names::inline_public_key;

/// The envelope's magic and version.
const MAGIC: &[u8; 4] = b"tmr1";
/// Domain separator of the signed bytes.
const SIGNING_DOMAIN: &[u8] = b"tabmesh-dht-record-v1\0";
/// Flag bit: the record is a tombstone.
const FLAG_TOMBSTONE: u8 = 1;
/// Largest publisher peer id accepted (an Ed25519 identity peer id is 38 bytes).
const MAX_PEER_ID_BYTES: usize = 64;
/// Largest signature accepted (Ed25519 signatures are 64 bytes).
const MAX_SIGNATURE_BYTES: usize = 128;

/// Sizes and lifetimes that every tabmesh peer enforces on records it stores or publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Shortest lifetime a publisher may ask for, in milliseconds.
    pub min_ttl_ms: u64,
    /// Longest lifetime a publisher may ask for, in milliseconds.
    pub max_ttl_ms: u64,
    /// Lifetime of a record when the publisher does not say.
    pub default_ttl_ms: u64,
    /// Clock skew tolerated between peers when checking an expiry against the maximum TTL.
    pub clock_skew_ms: u64,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 128,
            // A record travels through relay circuits: stay well below the circuit byte limits
            // and Kademlia's 16 KiB packets.
            max_value_bytes: 4 * 1024,
            min_ttl_ms: 10_000,
            max_ttl_ms: 24 * 3_600_000,
            default_ttl_ms: 3_600_000,
            clock_skew_ms: 60_000,
        }
    }
}

impl RecordLimits {
    /// Whether `key` may be used at all.
    pub fn check_key(&self, key: &[u8]) -> Result<(), RecordError> {
        if key.is_empty() {
            return Err(RecordError::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(RecordError::KeyTooLong {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Whether a publisher may ask for a lifetime of `ttl_ms`.
    pub fn check_ttl(&self, ttl_ms: u64) -> Result<(), RecordError> {
        if ttl_ms < self.min_ttl_ms || ttl_ms > self.max_ttl_ms {
            return Err(RecordError::TtlOutOfRange {
                ttl_ms,
                min_ms: self.min_ttl_ms,
                max_ms: self.max_ttl_ms,
            });
        }
        Ok(())
    }
}

/// Why a record is refused. The text is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The key is empty.
    #[error("the key is empty")]
    EmptyKey,
    /// The key is too long.
    #[error("the key is {len} bytes; at most {max} are allowed")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is too large.
    #[error("the value is {len} bytes; at most {max} are allowed")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The requested lifetime is out of range.
    #[error("a lifetime of {ttl_ms} ms is out of range ({min_ms} to {max_ms} ms)")]
    TtlOutOfRange {
        /// Requested lifetime.
        ttl_ms: u64,
        /// Shortest allowed.
        min_ms: u64,
        /// Longest allowed.
        max_ms: u64,
    },
    /// The record has expired.
    #[error("the record expired {ago_ms} ms ago")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// The record claims to live longer than any publisher may ask for.
    #[error("the record's expiry is {ahead_ms} ms ahead, beyond the maximum lifetime")]
    ExpiryTooFar {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// The bytes are not a tabmesh record.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The publisher's id does not carry a public key we can check a signature with.
    #[error("the publisher's peer id carries no public key")]
    UnverifiablePublisher,
    /// The signature does not match.
    #[error("the signature does not match the publisher, key and contents")]
    BadSignature,
    /// The key belongs to a namespace whose rule the record breaks (a service announced in
    /// another peer's name, a descriptor that is not one).
    #[error("{0}")]
    Namespace(String),
}

/// A record as its publisher signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The Kademlia key it is stored under.
    pub key: Vec<u8>,
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
    /// Who published it.
    pub publisher: PeerId,
    /// The publisher's version counter: a higher one replaces a lower one.
    pub seq: u64,
    /// When it stops being valid, Unix milliseconds.
    pub expires_at_ms: u64,
    /// "Removed by the publisher".
    pub tombstone: bool,
    /// The publisher's signature.
    pub signature: Vec<u8>,
}

impl SignedRecord {
    /// Signs a record with the publisher's key.
    pub fn sign(
        keypair: &Keypair,
        key: Vec<u8>,
        value: Vec<u8>,
        seq: u64,
        expires_at_ms: u64,
        tombstone: bool,
    ) -> Self {
        let mut record = Self {
            key,
            value,
            publisher: keypair.public().to_peer_id(),
            seq,
            expires_at_ms,
            tombstone,
            signature: Vec::new(),
        };
        // Signing with an Ed25519 key cannot fail; other key types are never used here.
        record.signature = keypair.sign(&record.signed_bytes()).unwrap_or_default();
        record
    }

    /// The envelope bytes stored as the Kademlia record's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        push_u16_prefixed(&mut out, &self.signature);
        out
    }

    /// Parses envelope bytes found under `key`. Checks the format and the signature, not the
    /// limits or the expiry (see [`validate`]).
    pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(RecordError::Malformed("not a tabmesh record (bad magic)"));
        }
        let flags = r.u8()?;
        if flags & !FLAG_TOMBSTONE != 0 {
            return Err(RecordError::Malformed("unknown flags"));
        }
        let seq = r.u64()?;
        let expires_at_ms = r.u64()?;
        let publisher_len = usize::from(r.u16()?);
        if publisher_len > MAX_PEER_ID_BYTES {
            return Err(RecordError::Malformed("publisher id too long"));
        }
        let publisher = PeerId::from_bytes(r.take(publisher_len)?)
            .map_err(|_| RecordError::Malformed("publisher is not a peer id"))?;
        let value_len = usize::try_from(r.u32()?)
            .map_err(|_| RecordError::Malformed("value length does not fit"))?;
        let value = r.take(value_len)?.to_vec();
        let signature_len = usize::from(r.u16()?);
        if signature_len > MAX_SIGNATURE_BYTES {
            return Err(RecordError::Malformed("signature too long"));
        }
        let signature = r.take(signature_len)?.to_vec();
        if !r.0.is_empty() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        let tombstone = flags & FLAG_TOMBSTONE != 0;
        if tombstone && !value.is_empty() {
            return Err(RecordError::Malformed("a tombstone carries no value"));
        }
        let record = Self {
            key: key.to_vec(),
            value,
            publisher,
            seq,
            expires_at_ms,
            tombstone,
            signature,
        };
        let public =
            inline_public_key(&record.publisher).ok_or(RecordError::UnverifiablePublisher)?;
        if !public.verify(&record.signed_bytes(), &record.signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(record)
    }

    /// Whether the record has expired at `now_ms` (Unix ms).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// The fields before the signature.
    fn body(&self) -> Vec<u8> {
        let peer = self.publisher.to_bytes();
        let mut out = Vec::with_capacity(32 + peer.len() + self.value.len() + 70);
        out.extend_from_slice(MAGIC);
        out.push(if self.tombstone { FLAG_TOMBSTONE } else { 0 });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        push_u16_prefixed(&mut out, &peer);
        let value_len = u32::try_from(self.value.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// What the signature covers: domain, key and body.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        push_u16_prefixed(&mut out, &self.key);
        out.extend_from_slice(&self.body());
        out
    }
}

/// Checks a decoded record against the limits and the clock (`now_ms`, Unix ms).
pub fn validate(
    record: &SignedRecord,
    limits: &RecordLimits,
    now_ms: u64,
) -> Result<(), RecordError> {
    limits.check_key(&record.key)?;
    if record.value.len() > limits.max_value_bytes {
        return Err(RecordError::ValueTooLarge {
            len: record.value.len(),
            max: limits.max_value_bytes,
        });
    }
    if record.is_expired(now_ms) {
        return Err(RecordError::Expired {
            ago_ms: now_ms - record.expires_at_ms,
        });
    }
    let ahead_ms = record.expires_at_ms - now_ms;
    if ahead_ms > limits.max_ttl_ms + limits.clock_skew_ms {
        return Err(RecordError::ExpiryTooFar { ahead_ms });
    }
    check_namespace(record)
}

/// The rules of the key namespaces that give records a meaning (today `svc/`, the services'),
/// read from the user's key: `/tabmesh/svc/…` and the old `svc/…` alike.
pub fn check_namespace(record: &SignedRecord) -> Result<(), RecordError> {
    crate::services::descriptor::check_record(
        super::key::user_key(&record.key),
        &record.publisher,
        &record.value,
        record.tombstone,
    )
    .map_err(|e| RecordError::Namespace(e.to_string()))
}

/// Decodes and validates record bytes found under `key`.
pub fn check(
    key: &[u8],
    bytes: &[u8],
    limits: &RecordLimits,
    now_ms: u64,
) -> Result<SignedRecord, RecordError> {
    // Refuse oversized input before parsing: the envelope adds well under 256 bytes.
    if bytes.len() > limits.max_value_bytes + 256 {
        return Err(RecordError::ValueTooLarge {
            len: bytes.len(),
            max: limits.max_value_bytes,
        });
    }
    let record = SignedRecord::decode(key, bytes)?;
    validate(&record, limits, now_ms)?;
    Ok(record)
}

/// How an incoming copy of a record compares with the one already held under the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precedence {
    /// The incoming record replaces the held one.
    Replace,
    /// Same record (or an older copy of it): nothing to do.
    Unchanged,
    /// Older than the held one from the same publisher.
    Stale {
        /// The held record's version.
        held_seq: u64,
    },
    /// Another publisher holds the key.
    HeldByOther {
        /// Who holds it.
        publisher: PeerId,
        /// Until when (Unix ms), unless they remove it.
        until_ms: u64,
    },
}

/// The rule every holder applies: a key belongs to the publisher of its live record; that
/// publisher's higher `(seq, expiry)` wins; an expired record or a tombstone frees the key for
/// anyone.
pub fn precedence(held: &SignedRecord, incoming: &SignedRecord, now_ms: u64) -> Precedence {
    if held.is_expired(now_ms) {
        return Precedence::Replace;
    }
    if held.publisher != incoming.publisher {
        if held.tombstone {
            return Precedence::Replace;
        }
        return Precedence::HeldByOther {
            publisher: held.publisher,
            until_ms: held.expires_at_ms,
        };
    }
    match (incoming.seq, incoming.expires_at_ms).cmp(&(held.seq, held.expires_at_ms)) {
        std::cmp::Ordering::Greater => Precedence::Replace,
        std::cmp::Ordering::Equal => Precedence::Unchanged,
        std::cmp::Ordering::Less if incoming.seq == held.seq => Precedence::Unchanged,
        std::cmp::Ordering::Less => Precedence::Stale { held_seq: held.seq },
    }
}

/// A short, printable preview of a value: text when it is UTF-8, hex otherwise.
pub fn preview(value: &[u8], max_chars: usize) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if text.chars().count() <= max_chars => text.to_owned(),
        Ok(text) => {
            let mut cut: String = text.chars().take(max_chars).collect();
            cut.push('…');
            cut
        }
        Err(_) => {
            let shown = &value[..value.len().min(max_chars / 2)];
            let more = if shown.len() < value.len() { "…" } else { "" };
            format!("0x{}{more}", crate::hex::encode(shown))
        }
    }
}

/// A key for display: the text when it is UTF-8, else `0x` and hex.
pub fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("0x{}", crate::hex::encode(key)),
    }
}

fn push_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// A cursor over envelope bytes that fails instead of reading past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn signed(keypair: &Keypair, key: &str, value: &str, seq: u64) -> SignedRecord {
        SignedRecord::sign(
            keypair,
            key.as_bytes().to_vec(),
            value.as_bytes().to_vec(),
            seq,
            NOW + 60_000,
            false,
        )
    }

    #[test]
    fn round_trips_and_verifies() {
        let keypair = Keypair::generate_ed25519();
        let record = signed(&keypair, "color", "blue", 3);
        let bytes = record.encode();
        let decoded = check(b"color", &bytes, &RecordLimits::default(), NOW).unwrap();
        assert_eq!(decoded, record);
    }

    #[test]
    fn refuses_a_record_replayed_under_another_key() {
        let keypair = Keypair::generate_ed25519();
        let bytes = signed(&keypair, "color", "blue", 1).encode();
        assert_eq!(
            SignedRecord::decode(b"colour", &bytes),
            Err(RecordError::BadSignature)
        );
    }

    #[test]
    fn refuses_tampered_fields() {
        let keypair = Keypair::generate_ed25519();
        let record = signed(&keypair, "k", "v", 1);
        // Extend the expiry without re-signing.
        let mut longer = record.clone();
        longer.expires_at_ms += 1;
        assert_eq!(
            SignedRecord::decode(b"k", &longer.encode()),
            Err(RecordError::BadSignature)
        );
        // Claim another publisher.
        let mut forged = record.clone();
        forged.publisher = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(
            SignedRecord::decode(b"k", &forged.encode()),
            Err(RecordError::BadSignature)
        );
        // Change the value.
        let mut changed = record;
        changed.value = b"w".to_vec();
        assert_eq!(
            SignedRecord::decode(b"k", &changed.encode()),
            Err(RecordError::BadSignature)
        );
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let keypair = Keypair::generate_ed25519();
        let bytes = signed(&keypair, "k", "value", 1).encode();
        for cut in 0..bytes.len() {
            assert!(
                SignedRecord::decode(b"k", &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            SignedRecord::decode(b"k", &trailing),
            Err(RecordError::Malformed("trailing bytes"))
        );
        assert!(SignedRecord::decode(b"k", b"hello world").is_err());
        let mut flags = bytes;
        flags[4] = 0x80;
        assert_eq!(
            SignedRecord::decode(b"k", &flags),
            Err(RecordError::Malformed("unknown flags"))
        );
    }

    #[test]
    fn enforces_limits_and_expiry() {
        let keypair = Keypair::generate_ed25519();
        let limits = RecordLimits::default();
        let long_key = "k".repeat(limits.max_key_bytes + 1);
        let r = signed(&keypair, &long_key, "v", 1);
        assert!(matches!(
            check(long_key.as_bytes(), &r.encode(), &limits, NOW),
            Err(RecordError::KeyTooLong { .. })
        ));
        let big = "x".repeat(limits.max_value_bytes + 1);
        let r = signed(&keypair, "k", &big, 1);
        assert!(matches!(
            check(b"k", &r.encode(), &limits, NOW),
            Err(RecordError::ValueTooLarge { .. })
        ));
        let r = signed(&keypair, "k", "v", 1);
        assert_eq!(
            check(b"k", &r.encode(), &limits, NOW + 60_000),
            Err(RecordError::Expired { ago_ms: 0 })
        );
        let far = SignedRecord::sign(
            &keypair,
            b"k".to_vec(),
            b"v".to_vec(),
            1,
            NOW + limits.max_ttl_ms + limits.clock_skew_ms + 1,
            false,
        );
        assert!(matches!(
            check(b"k", &far.encode(), &limits, NOW),
            Err(RecordError::ExpiryTooFar { .. })
        ));
        assert!(limits.check_ttl(limits.min_ttl_ms - 1).is_err());
        assert!(limits.check_ttl(limits.default_ttl_ms).is_ok());
        assert_eq!(limits.check_key(b""), Err(RecordError::EmptyKey));
    }

    #[test]
    fn the_key_belongs_to_the_publisher_of_its_live_record() {
        let alice = Keypair::generate_ed25519();
        let bob = Keypair::generate_ed25519();
        let a1 = signed(&alice, "k", "one", 1);
        let a2 = signed(&alice, "k", "two", 2);
        let b1 = signed(&bob, "k", "bob's", 1);
        assert_eq!(precedence(&a1, &a2, NOW), Precedence::Replace);
        assert_eq!(precedence(&a2, &a1, NOW), Precedence::Stale { held_seq: 2 });
        assert_eq!(precedence(&a1, &a1, NOW), Precedence::Unchanged);
        assert_eq!(
            precedence(&a1, &b1, NOW),
            Precedence::HeldByOther {
                publisher: alice.public().to_peer_id(),
                until_ms: NOW + 60_000
            }
        );
        // Expired or removed records free the key.
        assert_eq!(precedence(&a1, &b1, NOW + 60_000), Precedence::Replace);
        let removed = SignedRecord::sign(&alice, b"k".to_vec(), Vec::new(), 3, NOW + 60_000, true);
        assert_eq!(precedence(&a2, &removed, NOW), Precedence::Replace);
        assert_eq!(precedence(&removed, &b1, NOW), Precedence::Replace);
        // A stale copy of the removed value does not come back.
        assert_eq!(
            precedence(&removed, &a2, NOW),
            Precedence::Stale { held_seq: 3 }
        );
        // A republished copy (same seq, later expiry) refreshes it.
        let refreshed = SignedRecord::sign(
            &alice,
            b"k".to_vec(),
            b"two".to_vec(),
            2,
            NOW + 90_000,
            false,
        );
        assert_eq!(precedence(&a2, &refreshed, NOW), Precedence::Replace);
        assert_eq!(precedence(&refreshed, &a2, NOW), Precedence::Unchanged);
    }

    #[test]
    fn previews_text_and_bytes() {
        assert_eq!(preview(b"hello", 10), "hello");
        assert_eq!(preview(b"hello world", 5), "hello…");
        assert_eq!(preview(&[0xff, 0x00, 0x01], 10), "0xff0001");
        assert_eq!(key_text(&[0xff]), "0xff");
    }

    #[test]
    fn the_services_rule_holds_under_the_namespace_and_under_old_keys() {
        let (owner, squatter) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let id = owner.public().to_peer_id();
        let user = crate::services::descriptor::index_key(&id);
        let index = r#"{"services":{}}"#;
        for key in [super::super::key::kad_key(&user), user.as_bytes().to_vec()] {
            let text = key_text(&key);
            let sign = |by: &Keypair| {
                SignedRecord::sign(by, key.clone(), index.into(), 1, NOW + 60_000, false)
            };
            assert_eq!(check_namespace(&sign(&owner)), Ok(()), "{text}");
            assert!(
                matches!(
                    check_namespace(&sign(&squatter)),
                    Err(RecordError::Namespace(_))
                ),
                "{text}: another peer's index is a forgery"
            );
        }
    }
}
