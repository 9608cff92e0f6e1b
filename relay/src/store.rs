//! The relay's share of the DHT on disk: a redb database in the data directory.
//!
//! Every change the record store makes is written through in one transaction (committed with
//! fsync) before the store answers, so a relay that is stopped, killed or restarted comes back
//! with every record and provider record it held. What it loads is checked again like any
//! record from the network: expired or invalid entries are dropped, and removed from the file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tabmesh_core::dht::store::{ProviderEntry, StoreChange};
use tabmesh_node::dht::StoreBackend;
use tabmesh_node::dht::store::Persisted;

/// Record key → envelope bytes.
const RECORDS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("records");
/// (record key, provider peer id bytes) → provider entry (JSON).
const PROVIDERS: TableDefinition<'_, (&[u8], &[u8]), &str> = TableDefinition::new("providers");

/// The relay's DHT file.
pub struct RedbBackend {
    db: Database,
    path: PathBuf,
}

impl RedbBackend {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Database::create(path).with_context(|| {
            format!(
                "cannot open the DHT database {} (is another relay using this --data-dir?)",
                path.display()
            )
        })?;
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(PROVIDERS)?;
        txn.commit()?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    fn write(&self, changes: &[StoreChange]) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let mut providers = txn.open_table(PROVIDERS)?;
            for change in changes {
                match change {
                    StoreChange::RecordStored { key, raw } => {
                        records.insert(key.as_slice(), raw.as_slice())?;
                    }
                    StoreChange::RecordRemoved { key } => {
                        records.remove(key.as_slice())?;
                    }
                    StoreChange::ProviderStored { key, entry } => {
                        let provider = entry.provider.to_bytes();
                        providers.insert(
                            (key.as_slice(), provider.as_slice()),
                            entry.encode().as_str(),
                        )?;
                    }
                    StoreChange::ProviderRemoved { key, provider } => {
                        let provider = provider.to_bytes();
                        providers.remove((key.as_slice(), provider.as_slice()))?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn read(&self) -> anyhow::Result<Persisted> {
        let txn = self.db.begin_read()?;
        let mut persisted = Persisted::default();
        for entry in txn.open_table(RECORDS)?.iter()? {
            let (key, raw) = entry?;
            persisted
                .records
                .push((key.value().to_vec(), raw.value().to_vec()));
        }
        for entry in txn.open_table(PROVIDERS)?.iter()? {
            let (key, value) = entry?;
            let (record_key, _) = key.value();
            match ProviderEntry::decode(value.value()) {
                Some(provider) => persisted.providers.push((record_key.to_vec(), provider)),
                None => tracing::warn!("unreadable provider entry in the DHT database skipped"),
            }
        }
        Ok(persisted)
    }
}

impl StoreBackend for RedbBackend {
    fn apply(&mut self, changes: &[StoreChange]) {
        if let Err(error) = self.write(changes) {
            // The change stays in memory; the relay keeps serving it until it restarts.
            tracing::error!(path = %self.path.display(), %error, "cannot write the DHT database");
        }
    }

    fn load(&mut self) -> Persisted {
        match self.read() {
            Ok(persisted) => {
                tracing::info!(
                    records = persisted.records.len(),
                    providers = persisted.providers.len(),
                    path = %self.path.display(),
                    "DHT records loaded"
                );
                persisted
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "cannot read the DHT database");
                Persisted::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    #[test]
    fn changes_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("tabmesh-redb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dht.redb");
        let _ = std::fs::remove_file(&path);
        let provider = Keypair::generate_ed25519().public().to_peer_id();
        let entry = ProviderEntry {
            provider,
            addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            expires_at_ms: 42,
        };
        {
            let mut backend = RedbBackend::open(&path).unwrap();
            backend.apply(&[
                StoreChange::RecordStored {
                    key: b"a".to_vec(),
                    raw: b"one".to_vec(),
                },
                StoreChange::RecordStored {
                    key: b"b".to_vec(),
                    raw: b"two".to_vec(),
                },
                StoreChange::RecordRemoved { key: b"a".to_vec() },
                StoreChange::ProviderStored {
                    key: b"p".to_vec(),
                    entry: entry.clone(),
                },
            ]);
        }
        let mut backend = RedbBackend::open(&path).unwrap();
        let persisted = backend.load();
        assert_eq!(persisted.records, vec![(b"b".to_vec(), b"two".to_vec())]);
        assert_eq!(persisted.providers, vec![(b"p".to_vec(), entry)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
