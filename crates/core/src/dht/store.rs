//! A peer's local share of the DHT: the records and provider records it holds, with the rules
//! that decide what it accepts.
//!
//! Every record is checked ([`check`]) and compared with the copy already
//! held ([`precedence`]) before it is stored; quotas bound what any
//! one publisher or provider can make a peer hold. Each change is queued as a [`StoreChange`] so
//! that the driver can write it through to persistent storage (sessionStorage in a tab, redb on
//! the relay) without this type doing any I/O.

use std::collections::{BTreeMap, HashMap};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use super::record::{Precedence, RecordError, RecordLimits, SignedRecord, check, precedence};
use crate::names::peer_name;

/// Limits of a local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreLimits {
    /// Per-record limits.
    #[serde(flatten)]
    pub record: RecordLimits,
    /// Records held at most, all publishers together.
    pub max_records: usize,
    /// Live records held at most per publisher (tombstones do not count).
    pub max_records_per_publisher: usize,
    /// Keys with provider records held at most.
    pub max_provider_keys: usize,
    /// Providers remembered at most per key.
    pub max_providers_per_key: usize,
    /// Keys one provider may announce to us at most.
    pub max_keys_per_provider: usize,
    /// Addresses kept per provider record.
    pub max_provider_addrs: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            record: RecordLimits::default(),
            max_records: 1024,
            max_records_per_publisher: 32,
            max_provider_keys: 1024,
            max_providers_per_key: 20,
            max_keys_per_provider: 64,
            max_provider_addrs: 8,
        }
    }
}

/// Why the store refused something. The text is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The record itself is invalid.
    #[error(transparent)]
    Invalid(#[from] RecordError),
    /// An older version than the one held.
    #[error("a newer version (seq {held_seq}) is already stored")]
    Stale {
        /// The held version.
        held_seq: u64,
    },
    /// Another publisher holds the key.
    #[error("the key is held by {} until it expires or they remove it", peer_name(.publisher))]
    HeldByOther {
        /// Who holds it.
        publisher: PeerId,
        /// Until when (Unix ms).
        until_ms: u64,
    },
    /// The publisher has reached its quota here.
    #[error("quota reached: at most {max} records per publisher")]
    PublisherQuota {
        /// The quota.
        max: usize,
    },
    /// The store is full.
    #[error("the store is full ({max} records)")]
    StoreFull {
        /// Its capacity.
        max: usize,
    },
    /// The provider has reached its quota here, or the key has as many providers as we keep.
    #[error("provider quota reached: {0}")]
    ProviderQuota(&'static str),
}

impl Refusal {
    /// Whether the sender broke a rule (a strike in the misbehaviour ledger) rather than lost
    /// an honest race: a forged, malformed or oversized record is a violation; a stale copy, a
    /// key held by someone else, a full quota or a record that expired on the way (or whose
    /// expiry a skewed clock put too far ahead) can come from an honest peer.
    pub fn is_violation(&self) -> bool {
        match self {
            Self::Invalid(e) => !matches!(
                e,
                RecordError::Expired { .. } | RecordError::ExpiryTooFar { .. }
            ),
            Self::Stale { .. }
            | Self::HeldByOther { .. }
            | Self::PublisherQuota { .. }
            | Self::StoreFull { .. }
            | Self::ProviderQuota(_) => false,
        }
    }
}

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A key we did not hold.
    New,
    /// A newer version of a held record.
    Replaced,
    /// The same record again: nothing changed.
    Unchanged,
}

/// A held record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record, checked.
    pub record: SignedRecord,
    /// Its envelope bytes, as stored in Kademlia and in persistent storage.
    pub raw: Vec<u8>,
    /// Who handed it to us (`None`: we published it, or it was restored from storage).
    pub from: Option<PeerId>,
    /// When we stored it (Unix ms).
    pub stored_at_ms: u64,
}

/// A provider record: `provider` says it has what `key` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEntry {
    /// The providing peer.
    pub provider: PeerId,
    /// Its addresses, as it announced them.
    pub addrs: Vec<Multiaddr>,
    /// When the announcement expires (Unix ms).
    pub expires_at_ms: u64,
}

impl ProviderEntry {
    /// The entry as text, for persistent storage.
    pub fn encode(&self) -> String {
        let stored = StoredProvider {
            provider: self.provider.to_base58(),
            addrs: self.addrs.iter().map(ToString::to_string).collect(),
            expires_at_ms: self.expires_at_ms,
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Parses [`encode`](Self::encode)'s text; `None` if it is not such an entry.
    pub fn decode(text: &str) -> Option<Self> {
        // `from_slice`, not `from_str`, here and wherever the web app reads JSON text: one JSON
        // reader (of bytes) in the module instead of two, ~4 KB less gzipped.
        let stored: StoredProvider = serde_json::from_slice(text.as_bytes()).ok()?;
        Some(Self {
            provider: stored.provider.parse().ok()?,
            addrs: stored.addrs.iter().filter_map(|a| a.parse().ok()).collect(),
            expires_at_ms: stored.expires_at_ms,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredProvider {
    provider: String,
    addrs: Vec<String>,
    expires_at_ms: u64,
}

/// A change to write through to persistent storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A record was stored or replaced: persist these envelope bytes under the key.
    RecordStored {
        /// The key.
        key: Vec<u8>,
        /// The envelope.
        raw: Vec<u8>,
    },
    /// A record was dropped.
    RecordRemoved {
        /// The key.
        key: Vec<u8>,
    },
    /// A provider record was added or refreshed.
    ProviderStored {
        /// The key.
        key: Vec<u8>,
        /// The record.
        entry: ProviderEntry,
    },
    /// A provider record was dropped.
    ProviderRemoved {
        /// The key.
        key: Vec<u8>,
        /// The provider.
        provider: PeerId,
    },
}

/// The records and provider records a peer holds.
#[derive(Debug)]
pub struct LocalStore {
    local: PeerId,
    limits: StoreLimits,
    records: BTreeMap<Vec<u8>, StoredRecord>,
    per_publisher: HashMap<PeerId, usize>,
    providers: BTreeMap<Vec<u8>, Vec<ProviderEntry>>,
    per_provider: HashMap<PeerId, usize>,
    changes: Vec<StoreChange>,
}

impl LocalStore {
    /// An empty store for the peer `local`.
    pub fn new(local: PeerId, limits: StoreLimits) -> Self {
        Self {
            local,
            limits,
            records: BTreeMap::new(),
            per_publisher: HashMap::new(),
            providers: BTreeMap::new(),
            per_provider: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Checks and stores envelope bytes found under `key`, handed to us by `from`.
    pub fn put_raw(
        &mut self,
        now_ms: u64,
        key: &[u8],
        raw: &[u8],
        from: Option<PeerId>,
    ) -> Result<Stored, Refusal> {
        let record = check(key, raw, &self.limits.record, now_ms)?;
        self.insert(now_ms, record, raw.to_vec(), from)
    }

    /// Stores a record this peer just signed.
    pub fn put_signed(&mut self, now_ms: u64, record: SignedRecord) -> Result<Stored, Refusal> {
        super::record::validate(&record, &self.limits.record, now_ms)?;
        let raw = record.encode();
        self.insert(now_ms, record, raw, None)
    }

    fn insert(
        &mut self,
        now_ms: u64,
        record: SignedRecord,
        raw: Vec<u8>,
        from: Option<PeerId>,
    ) -> Result<Stored, Refusal> {
        let outcome = match self.records.get(&record.key) {
            None => {
                if self.records.len() >= self.limits.max_records {
                    self.expire(now_ms);
                    if self.records.len() >= self.limits.max_records {
                        return Err(Refusal::StoreFull {
                            max: self.limits.max_records,
                        });
                    }
                }
                Stored::New
            }
            Some(held) => match precedence(&held.record, &record, now_ms) {
                Precedence::Replace => Stored::Replaced,
                Precedence::Unchanged => return Ok(Stored::Unchanged),
                Precedence::Stale { held_seq } => return Err(Refusal::Stale { held_seq }),
                Precedence::HeldByOther {
                    publisher,
                    until_ms,
                } => {
                    return Err(Refusal::HeldByOther {
                        publisher,
                        until_ms,
                    });
                }
            },
        };
        let replaced_same_publisher = self.records.get(&record.key).is_some_and(|held| {
            held.record.publisher == record.publisher && !held.record.tombstone
        });
        if !record.tombstone
            && !replaced_same_publisher
            && self.live_count(&record.publisher) >= self.limits.max_records_per_publisher
        {
            return Err(Refusal::PublisherQuota {
                max: self.limits.max_records_per_publisher,
            });
        }
        let key = record.key.clone();
        self.drop_record(&key);
        if !record.tombstone {
            *self.per_publisher.entry(record.publisher).or_default() += 1;
        }
        self.changes.push(StoreChange::RecordStored {
            key: key.clone(),
            raw: raw.clone(),
        });
        self.records.insert(
            key,
            StoredRecord {
                record,
                raw,
                from,
                stored_at_ms: now_ms,
            },
        );
        Ok(outcome)
    }

    fn live_count(&self, publisher: &PeerId) -> usize {
        self.per_publisher.get(publisher).copied().unwrap_or(0)
    }

    /// Removes a record without writing a change (used before replacing it).
    fn drop_record(&mut self, key: &[u8]) -> Option<StoredRecord> {
        let held = self.records.remove(key)?;
        if !held.record.tombstone
            && let Some(n) = self.per_publisher.get_mut(&held.record.publisher)
        {
            *n -= 1;
            if *n == 0 {
                self.per_publisher.remove(&held.record.publisher);
            }
        }
        Some(held)
    }

    /// The record held under `key`, expired or not.
    pub fn get(&self, key: &[u8]) -> Option<&StoredRecord> {
        self.records.get(key)
    }

    /// The record held under `key` if it is still valid at `now_ms`.
    pub fn get_live(&self, key: &[u8], now_ms: u64) -> Option<&StoredRecord> {
        self.records
            .get(key)
            .filter(|r| !r.record.is_expired(now_ms))
    }

    /// Drops the record under `key`.
    pub fn remove(&mut self, key: &[u8]) {
        if self.drop_record(key).is_some() {
            self.changes
                .push(StoreChange::RecordRemoved { key: key.to_vec() });
        }
    }

    /// All held records, by key.
    pub fn records(&self) -> impl Iterator<Item = &StoredRecord> {
        self.records.values()
    }

    /// Number of held records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Drops expired records and provider records; returns how many went.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let expired: Vec<Vec<u8>> = self
            .records
            .iter()
            .filter(|(_, r)| r.record.is_expired(now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone = expired.len();
        for key in expired {
            self.remove(&key);
        }
        let stale: Vec<(Vec<u8>, PeerId)> = self
            .providers
            .iter()
            .flat_map(|(k, list)| {
                list.iter()
                    .filter(|e| now_ms >= e.expires_at_ms)
                    .map(|e| (k.clone(), e.provider))
            })
            .collect();
        gone += stale.len();
        for (key, provider) in stale {
            self.remove_provider(&key, &provider);
        }
        gone
    }

    /// Records that `provider` provides `key` (our own announcements included).
    pub fn add_provider(&mut self, key: &[u8], mut entry: ProviderEntry) -> Result<(), Refusal> {
        self.limits.record.check_key(key)?;
        entry.addrs.truncate(self.limits.max_provider_addrs);
        let known_key = self.providers.contains_key(key);
        let list = self.providers.get(key);
        let known = list.is_some_and(|l| l.iter().any(|e| e.provider == entry.provider));
        if !known {
            if !known_key && self.providers.len() >= self.limits.max_provider_keys {
                return Err(Refusal::ProviderQuota("too many keys with providers"));
            }
            if list.is_some_and(|l| l.len() >= self.limits.max_providers_per_key) {
                return Err(Refusal::ProviderQuota(
                    "the key has as many providers as we keep",
                ));
            }
            let own = entry.provider == self.local;
            if !own
                && self.per_provider.get(&entry.provider).copied().unwrap_or(0)
                    >= self.limits.max_keys_per_provider
            {
                return Err(Refusal::ProviderQuota("too many keys from this provider"));
            }
            *self.per_provider.entry(entry.provider).or_default() += 1;
        }
        self.changes.push(StoreChange::ProviderStored {
            key: key.to_vec(),
            entry: entry.clone(),
        });
        let list = self.providers.entry(key.to_vec()).or_default();
        list.retain(|e| e.provider != entry.provider);
        list.push(entry);
        Ok(())
    }

    /// Who provides `key`, as far as we know.
    pub fn providers(&self, key: &[u8]) -> &[ProviderEntry] {
        self.providers.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every provider record held, by key.
    pub fn provider_records(&self) -> impl Iterator<Item = (&Vec<u8>, &ProviderEntry)> {
        self.providers
            .iter()
            .flat_map(|(k, list)| list.iter().map(move |e| (k, e)))
    }

    /// Keys we announce ourselves as a provider of.
    pub fn provided(&self) -> impl Iterator<Item = (&Vec<u8>, &ProviderEntry)> {
        let local = self.local;
        self.provider_records()
            .filter(move |(_, e)| e.provider == local)
    }

    /// Forgets that `provider` provides `key`.
    pub fn remove_provider(&mut self, key: &[u8], provider: &PeerId) {
        let Some(list) = self.providers.get_mut(key) else {
            return;
        };
        let before = list.len();
        list.retain(|e| &e.provider != provider);
        if list.len() == before {
            return;
        }
        if list.is_empty() {
            self.providers.remove(key);
        }
        if let Some(n) = self.per_provider.get_mut(provider) {
            *n -= 1;
            if *n == 0 {
                self.per_provider.remove(provider);
            }
        }
        self.changes.push(StoreChange::ProviderRemoved {
            key: key.to_vec(),
            provider: *provider,
        });
    }

    /// The changes since the last call, oldest first, for the driver to persist.
    pub fn take_changes(&mut self) -> Vec<StoreChange> {
        std::mem::take(&mut self.changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    const NOW: u64 = 1_800_000_000_000;

    fn record(keypair: &Keypair, key: &str, seq: u64) -> SignedRecord {
        SignedRecord::sign(
            keypair,
            key.as_bytes().to_vec(),
            format!("value {seq}").into_bytes(),
            seq,
            NOW + 60_000,
            false,
        )
    }

    fn store_with(limits: StoreLimits) -> LocalStore {
        LocalStore::new(Keypair::generate_ed25519().public().to_peer_id(), limits)
    }

    #[test]
    fn stores_replaces_and_journals() {
        let mut store = store_with(StoreLimits::default());
        let alice = Keypair::generate_ed25519();
        let from = Some(alice.public().to_peer_id());
        let r1 = record(&alice, "k", 1);
        assert_eq!(
            store.put_raw(NOW, b"k", &r1.encode(), from),
            Ok(Stored::New)
        );
        assert_eq!(
            store.put_raw(NOW, b"k", &r1.encode(), from),
            Ok(Stored::Unchanged)
        );
        let r2 = record(&alice, "k", 2);
        assert_eq!(
            store.put_raw(NOW, b"k", &r2.encode(), from),
            Ok(Stored::Replaced)
        );
        assert_eq!(
            store.put_raw(NOW, b"k", &r1.encode(), from),
            Err(Refusal::Stale { held_seq: 2 })
        );
        assert_eq!(store.get(b"k").map(|r| r.record.seq), Some(2));
        let changes = store.take_changes();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(store.take_changes().is_empty());
    }

    #[test]
    fn refuses_invalid_records_and_keeps_what_it_had() {
        let mut store = store_with(StoreLimits::default());
        let alice = Keypair::generate_ed25519();
        let good = record(&alice, "k", 1);
        store.put_raw(NOW, b"k", &good.encode(), None).unwrap();
        let mut forged = record(&alice, "k", 9).encode();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            store.put_raw(NOW, b"k", &forged, None),
            Err(Refusal::Invalid(RecordError::BadSignature))
        );
        assert_eq!(
            store.put_raw(NOW, b"k", b"garbage", None),
            Err(Refusal::Invalid(RecordError::Malformed(
                "not a tabmesh record (bad magic)"
            )))
        );
        let mallory = Keypair::generate_ed25519();
        assert!(matches!(
            store.put_raw(NOW, b"k", &record(&mallory, "k", 100).encode(), None),
            Err(Refusal::HeldByOther { .. })
        ));
        assert_eq!(store.get(b"k").map(|r| &r.record), Some(&good));
    }

    #[test]
    fn enforces_the_publisher_quota_and_capacity() {
        let limits = StoreLimits {
            max_records: 5,
            max_records_per_publisher: 3,
            ..StoreLimits::default()
        };
        let mut store = store_with(limits);
        let alice = Keypair::generate_ed25519();
        for i in 0..3 {
            let r = record(&alice, &format!("a{i}"), 1);
            store.put_raw(NOW, &r.key, &r.encode(), None).unwrap();
        }
        let r = record(&alice, "a3", 1);
        assert_eq!(
            store.put_raw(NOW, &r.key, &r.encode(), None),
            Err(Refusal::PublisherQuota { max: 3 })
        );
        // Replacing one of her own records is not a new one.
        let r = record(&alice, "a0", 2);
        assert_eq!(
            store.put_raw(NOW, &r.key, &r.encode(), None),
            Ok(Stored::Replaced)
        );
        // A tombstone frees quota.
        let gone = SignedRecord::sign(&alice, b"a1".to_vec(), Vec::new(), 2, NOW + 60_000, true);
        store.put_raw(NOW, b"a1", &gone.encode(), None).unwrap();
        let r = record(&alice, "a3", 1);
        store.put_raw(NOW, &r.key, &r.encode(), None).unwrap();
        // The store is now full (a0, a1 tombstone, a2, a3 + one more).
        let bob = Keypair::generate_ed25519();
        let r = record(&bob, "b0", 1);
        store.put_raw(NOW, &r.key, &r.encode(), None).unwrap();
        let r = record(&bob, "b1", 1);
        assert_eq!(
            store.put_raw(NOW, &r.key, &r.encode(), None),
            Err(Refusal::StoreFull { max: 5 })
        );
        // Once records expire there is room again.
        assert_eq!(store.expire(NOW + 60_000), 5);
        assert_eq!(
            store
                .put_raw(NOW + 60_000, &r.key, &r.encode(), None)
                .map_err(|e| e.to_string()),
            Err("the record expired 0 ms ago".to_owned())
        );
    }

    #[test]
    fn bounds_provider_records() {
        let limits = StoreLimits {
            max_providers_per_key: 2,
            max_keys_per_provider: 2,
            ..StoreLimits::default()
        };
        let mut store = store_with(limits);
        let entry = |p: &PeerId| ProviderEntry {
            provider: *p,
            addrs: Vec::new(),
            expires_at_ms: NOW + 1000,
        };
        let peers: Vec<PeerId> = (0..3)
            .map(|_| Keypair::generate_ed25519().public().to_peer_id())
            .collect();
        store.add_provider(b"k", entry(&peers[0])).unwrap();
        store.add_provider(b"k", entry(&peers[0])).unwrap();
        store.add_provider(b"k", entry(&peers[1])).unwrap();
        assert!(store.add_provider(b"k", entry(&peers[2])).is_err());
        assert_eq!(store.providers(b"k").len(), 2);
        store.add_provider(b"j", entry(&peers[0])).unwrap();
        assert!(store.add_provider(b"i", entry(&peers[0])).is_err());
        assert_eq!(store.expire(NOW + 1000), 3);
        assert!(store.providers(b"k").is_empty());
        store.add_provider(b"i", entry(&peers[0])).unwrap();
    }

    #[test]
    fn forged_and_malformed_records_are_violations_honest_races_are_not() {
        assert!(Refusal::Invalid(RecordError::BadSignature).is_violation());
        assert!(Refusal::Invalid(RecordError::Malformed("truncated")).is_violation());
        assert!(
            Refusal::Invalid(RecordError::ValueTooLarge {
                len: 9000,
                max: 4096
            })
            .is_violation()
        );
        assert!(!Refusal::Invalid(RecordError::Expired { ago_ms: 5 }).is_violation());
        assert!(!Refusal::Invalid(RecordError::ExpiryTooFar { ahead_ms: 5 }).is_violation());
        assert!(!Refusal::Stale { held_seq: 2 }.is_violation());
        assert!(!Refusal::PublisherQuota { max: 3 }.is_violation());
        assert!(!Refusal::ProviderQuota("full").is_violation());
    }
}
