//! Kademlia's record store, backed by `tabmesh_core::dht::store::LocalStore` and written through
//! to a [`StoreBackend`] (sessionStorage in a tab, redb on the relay, nothing for a native node).
//!
//! The DHT behaviour's own calls pass the time in (`now_ms`, Unix ms); Kademlia's calls through
//! the [`RecordStore`] trait carry none, so those read the clock here.
//!
//! libp2p's Kademlia calls this store for the records and provider records this peer publishes
//! and serves; records that other peers send us arrive as filtered events and are stored by
//! the node through [`KadStore::accept_record`], so every record here has passed the core's
//! checks (signature, limits, expiry, ownership, quotas).

use std::borrow::Cow;

use libp2p::PeerId;
use libp2p::kad::store::{self, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use tabmesh_core::dht::record::SignedRecord;
use tabmesh_core::dht::store::{
    LocalStore, ProviderEntry, Refusal, StoreChange, StoreLimits, Stored,
};
use web_time::{Duration, Instant};

use crate::platform::unix_now_ms;

/// What a backend kept: records as `(key, envelope)`, provider records as `(key, entry)`.
#[derive(Debug, Default)]
pub struct Persisted {
    /// Records.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Provider records.
    pub providers: Vec<(Vec<u8>, ProviderEntry)>,
}

/// Where a peer's records are kept across restarts.
pub trait StoreBackend: Send {
    /// Writes these changes through (called after every change, in order).
    fn apply(&mut self, changes: &[StoreChange]);
    /// Everything stored.
    fn load(&mut self) -> Persisted;
}

/// No persistence: the store lives as long as the process.
#[derive(Debug, Default)]
pub struct MemoryBackend;

impl StoreBackend for MemoryBackend {
    fn apply(&mut self, _changes: &[StoreChange]) {}
    fn load(&mut self) -> Persisted {
        Persisted::default()
    }
}

/// The `Instant` at Unix time `at_ms` (Kademlia keeps expiries as `Instant`s).
fn instant_at(at_ms: u64) -> Instant {
    let now_ms = unix_now_ms();
    let now = Instant::now();
    if at_ms >= now_ms {
        now + Duration::from_millis(at_ms - now_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_ms - at_ms))
            .unwrap_or(now)
    }
}

/// The Unix time of `at`.
fn unix_ms_at(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ms = unix_now_ms();
    if at >= now {
        now_ms.saturating_add(u64::try_from((at - now).as_millis()).unwrap_or(u64::MAX))
    } else {
        now_ms.saturating_sub(u64::try_from((now - at).as_millis()).unwrap_or(u64::MAX))
    }
}

/// The Kademlia store of a tabmesh peer.
pub struct KadStore {
    peer_id: PeerId,
    local: LocalStore,
    backend: Box<dyn StoreBackend>,
    provider_ttl: Duration,
    last_refusal: Option<Refusal>,
    restored: u64,
}

impl KadStore {
    /// A store for `local`, loading what `backend` kept (invalid or expired entries are dropped
    /// and removed from the backend).
    pub fn new(
        local: PeerId,
        limits: StoreLimits,
        provider_ttl: Duration,
        mut backend: Box<dyn StoreBackend>,
    ) -> Self {
        let Persisted { records, providers } = backend.load();
        let mut store = LocalStore::new(local, limits);
        let now = unix_now_ms();
        let mut dropped = Vec::new();
        let mut restored = 0;
        for (key, raw) in records {
            match store.put_raw(now, &key, &raw, None) {
                Ok(_) => restored += 1,
                Err(refusal) => {
                    tracing::info!(key = %String::from_utf8_lossy(&key), %refusal, "stored record dropped");
                    dropped.push(StoreChange::RecordRemoved { key });
                }
            }
        }
        for (key, entry) in providers {
            if entry.expires_at_ms <= now || store.add_provider(&key, entry.clone()).is_err() {
                dropped.push(StoreChange::ProviderRemoved {
                    key,
                    provider: entry.provider,
                });
            }
        }
        // What was loaded is already in the backend.
        store.take_changes();
        backend.apply(&dropped);
        Self {
            peer_id: local,
            local: store,
            backend,
            provider_ttl,
            last_refusal: None,
            restored,
        }
    }

    /// Records restored from the backend at start.
    pub fn restored(&self) -> u64 {
        self.restored
    }

    /// The core store (read-only).
    pub fn local(&self) -> &LocalStore {
        &self.local
    }

    /// Stores a record another peer sent (`from`) at `now_ms`: checked, compared, counted
    /// against quotas.
    pub fn accept_record(
        &mut self,
        now_ms: u64,
        key: &[u8],
        raw: &[u8],
        from: PeerId,
    ) -> Result<Stored, Refusal> {
        let result = self.local.put_raw(now_ms, key, raw, Some(from));
        self.flush();
        result
    }

    /// Stores a record this peer signed, at `now_ms`.
    pub fn put_own(&mut self, now_ms: u64, record: SignedRecord) -> Result<Stored, Refusal> {
        let result = self.local.put_signed(now_ms, record);
        self.flush();
        result
    }

    /// Stores a provider record another peer announced.
    pub fn accept_provider(&mut self, record: &ProviderRecord) -> Result<(), Refusal> {
        let result = self
            .local
            .add_provider(record.key.as_ref(), entry_of(record));
        self.flush();
        result
    }

    /// Drops the records and provider records expired at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let gone = self.local.expire(now_ms);
        self.flush();
        gone
    }

    /// The reason of the last refusal of a `put` made by Kademlia itself.
    pub fn take_last_refusal(&mut self) -> Option<Refusal> {
        self.last_refusal.take()
    }

    fn flush(&mut self) {
        let changes = self.local.take_changes();
        if !changes.is_empty() {
            self.backend.apply(&changes);
        }
    }
}

/// The Kademlia record for a held record.
pub fn kad_record(record: &SignedRecord, raw: &[u8]) -> Record {
    Record {
        key: RecordKey::new(&record.key),
        value: raw.to_vec(),
        publisher: Some(record.publisher),
        expires: Some(instant_at(record.expires_at_ms)),
    }
}

fn entry_of(record: &ProviderRecord) -> ProviderEntry {
    ProviderEntry {
        provider: record.provider,
        addrs: record.addresses.clone(),
        expires_at_ms: record.expires.map_or(u64::MAX, unix_ms_at),
    }
}

fn provider_record(key: &[u8], entry: &ProviderEntry) -> ProviderRecord {
    ProviderRecord {
        key: RecordKey::new(&key),
        provider: entry.provider,
        expires: (entry.expires_at_ms != u64::MAX).then(|| instant_at(entry.expires_at_ms)),
        addresses: entry.addrs.clone(),
    }
}

impl RecordStore for KadStore {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::vec::IntoIter<Cow<'a, ProviderRecord>>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.local
            .get_live(k.as_ref(), unix_now_ms())
            .map(|r| Cow::Owned(kad_record(&r.record, &r.raw)))
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        // Kademlia calls this for records we publish (already stored by the node, so this is
        // `Unchanged`) and never for records from other peers (inserts are filtered).
        match self
            .local
            .put_raw(unix_now_ms(), r.key.as_ref(), &r.value, None)
        {
            Ok(_) => {
                self.flush();
                Ok(())
            }
            Err(refusal) => {
                let error = match refusal {
                    Refusal::StoreFull { .. } | Refusal::PublisherQuota { .. } => {
                        store::Error::MaxRecords
                    }
                    _ => store::Error::ValueTooLarge,
                };
                self.last_refusal = Some(refusal);
                Err(error)
            }
        }
    }

    fn remove(&mut self, k: &RecordKey) {
        self.local.remove(k.as_ref());
        self.flush();
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        let now = unix_now_ms();
        self.local
            .records()
            .filter(|r| !r.record.is_expired(now))
            .map(|r| Cow::Owned(kad_record(&r.record, &r.raw)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn add_provider(&mut self, mut record: ProviderRecord) -> store::Result<()> {
        // Our own announcements live until we stop providing; others' for the provider TTL.
        if record.expires.is_none() && record.provider != self.peer_id {
            record.expires = Some(Instant::now() + self.provider_ttl);
        }
        let result = self
            .local
            .add_provider(record.key.as_ref(), entry_of(&record));
        self.flush();
        result.map_err(|refusal| {
            self.last_refusal = Some(refusal);
            store::Error::MaxProvidedKeys
        })
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let now = unix_now_ms();
        self.local
            .providers(key.as_ref())
            .iter()
            .filter(|e| e.expires_at_ms > now)
            .map(|e| provider_record(key.as_ref(), e))
            .collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.local
            .provided()
            .map(|(k, e)| Cow::Owned(provider_record(k, e)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.local.remove_provider(k.as_ref(), p);
        self.flush();
    }
}
