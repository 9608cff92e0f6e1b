//! Kademlia records: the signed envelope, its checks, and the stored provider entries.

use tabmesh_core::dht::record::{self, Precedence, RecordLimits, SignedRecord};
use tabmesh_core::dht::store::{LocalStore, ProviderEntry, StoreLimits, Stored};
use tabmesh_core::services::descriptor;

use super::{key, outcome, peer};
use crate::{Outcome, Script, Target};

pub(super) const RECORD: Target = Target {
    name: "dht_record",
    about: "a signed DHT record envelope under a key, checked and compared with a held copy",
    run: record,
    seeds: records,
};

pub(super) const STORE: Target = Target {
    name: "dht_store",
    about: "a record store fed signed puts from three publishers, removals and time passing",
    run: store,
    seeds: store_scripts,
};

pub(super) const PROVIDER_ENTRY: Target = Target {
    name: "dht_provider_entry",
    about: "a provider entry read back from storage (relay disk, browser storage)",
    run: provider_entry,
    seeds: provider_entries,
};

/// A fixed "now" (Unix ms), so that expiry checks replay the same way.
const NOW_MS: u64 = 1_800_000_000_000;

/// `[key length: u16][key][envelope]`.
fn record(data: &[u8]) -> Outcome {
    let mut script = Script::new(data);
    let len = usize::from(script.u16());
    let key = script.take(len);
    let bytes = script.remainder();
    let decoded = SignedRecord::decode(key, bytes);
    if let Ok(found) = &decoded {
        let again = SignedRecord::decode(key, &found.encode())
            .expect("a decoded record re-encodes to a decodable one");
        assert_eq!(&again, found, "a record survives encode and decode");
        let checked = record::check(key, bytes, &RecordLimits::default(), NOW_MS);
        let _ = record::preview(&found.value, 40);
        let _ = record::key_text(&found.key);
        let held = held(key);
        let one_way = record::precedence(&held, found, NOW_MS);
        if checked.is_ok() && found.publisher != held.publisher {
            // A record from another publisher never replaces a live one.
            assert_ne!(one_way, Precedence::Replace, "{found:?} replaced {held:?}");
        }
        let _ = record::precedence(found, &held, NOW_MS);
    }
    outcome(&decoded)
}

fn held(under: &[u8]) -> SignedRecord {
    SignedRecord::sign(
        &key(9),
        under.to_vec(),
        b"held".to_vec(),
        5,
        NOW_MS + 60_000,
        false,
    )
}

fn records() -> Vec<Vec<u8>> {
    let publisher = key(4);
    let with_key = |key: &[u8], envelope: Vec<u8>| {
        let len = u16::try_from(key.len()).expect("seed keys are short");
        [len.to_be_bytes().as_slice(), key, &envelope].concat()
    };
    let plain = |k: &str, value: &[u8], seq, tombstone| {
        let signed = SignedRecord::sign(
            &publisher,
            k.as_bytes().to_vec(),
            value.to_vec(),
            seq,
            NOW_MS + 3_600_000,
            tombstone,
        );
        with_key(k.as_bytes(), signed.encode())
    };
    let owner = publisher.public().to_peer_id();
    vec![
        plain("color", b"blue", 1, false),
        plain("color", b"", 2, true),
        plain(
            &descriptor::index_key(&owner),
            br#"{"services":{"echo":"1"}}"#,
            1,
            false,
        ),
        plain(
            &descriptor::descriptor_key("echo", &owner),
            br#"{"name":"echo","version":"1","description":"","types":{"echo":{}}}"#,
            1,
            false,
        ),
        // Held under the same key by another publisher.
        with_key(
            b"color",
            SignedRecord::sign(
                &key(9),
                b"color".to_vec(),
                b"red".to_vec(),
                7,
                NOW_MS + 1,
                false,
            )
            .encode(),
        ),
    ]
}

/// Keys the store script picks from: a few plain ones and a services one.
const STORE_KEYS: [&[u8]; 5] = [b"color", b"size", b"name", b"k", b"svc/echo"];

/// A script of `[op]…`: op 0 and 1 put a record signed here (publisher, key, seq, lifetime in
/// minutes, tombstone, value chunk) through the network path (`put_raw`), 2 lets minutes pass
/// and expires, 3 removes a key. Small limits, so that the quotas are reached. Signing inside
/// the target gets past the signature check, which mutated bytes never do.
fn store(data: &[u8]) -> Outcome {
    let limits = StoreLimits {
        max_records: 4,
        max_records_per_publisher: 2,
        ..StoreLimits::default()
    };
    let publishers = [key(11), key(12), key(13)];
    let mut store = LocalStore::new(peer(10), limits.clone());
    let mut now_ms = NOW_MS;
    let mut script = Script::new(data);
    let mut stored_any = false;
    while !script.is_empty() {
        let op = script.byte() % 4;
        let at = STORE_KEYS[usize::from(script.byte()) % STORE_KEYS.len()];
        match op {
            0 | 1 => {
                let publisher = &publishers[usize::from(script.byte()) % publishers.len()];
                let seq = u64::from(script.byte());
                let lifetime_ms = u64::from(script.byte()) * 60_000;
                let tombstone = script.byte() & 1 == 1;
                let value = script.chunk().to_vec();
                let record = SignedRecord::sign(
                    publisher,
                    at.to_vec(),
                    value,
                    seq,
                    now_ms + lifetime_ms,
                    tombstone,
                );
                let live_before: Vec<_> = STORE_KEYS
                    .iter()
                    .filter_map(|k| store.get_live(k, now_ms).cloned())
                    .collect();
                let held_before = store.get(at).cloned();
                let result = store.put_raw(now_ms, at, &record.encode(), Some(peer(14)));
                match &result {
                    Ok(Stored::New | Stored::Replaced) => {
                        stored_any = true;
                        let held = store.get(at).expect("a stored record is held");
                        assert_eq!(held.record, record, "the store holds what it accepted");
                    }
                    Ok(Stored::Unchanged) | Err(_) => {
                        assert_eq!(
                            store.get(at),
                            held_before.as_ref(),
                            "a refused or unchanged put leaves the held record: {result:?}"
                        );
                    }
                }
                for before in live_before.iter().filter(|b| b.record.key != at) {
                    assert_eq!(
                        store.get(&before.record.key),
                        Some(before),
                        "a put under {at:?} lost another live record"
                    );
                }
                assert!(
                    store.len() <= limits.max_records,
                    "the store stays within its bound"
                );
            }
            2 => {
                now_ms += u64::from(script.byte()) * 60_000;
                store.expire(now_ms);
            }
            _ => {
                store.remove(at);
                assert!(store.get(at).is_none(), "a removed record is gone");
            }
        }
        let _ = store.take_changes();
    }
    if stored_any {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

fn store_scripts() -> Vec<Vec<u8>> {
    let put = |key: u8, publisher: u8, seq: u8, minutes: u8, tombstone: u8, value: &[u8]| {
        let len = u8::try_from(value.len()).expect("seed values are short");
        [&[0, key, publisher, seq, minutes, tombstone, len], value].concat()
    };
    vec![
        // A record, a newer version, a stale one, another publisher's try, a tombstone.
        [
            put(0, 0, 1, 10, 0, b"blue"),
            put(0, 0, 2, 10, 0, b"red"),
            put(0, 0, 1, 10, 0, b"old"),
            put(0, 1, 9, 10, 0, b"mine"),
            put(0, 0, 3, 10, 1, b""),
            put(0, 1, 1, 10, 0, b"free now"),
        ]
        .concat(),
        // Quotas: one publisher over its 2 records, then the store over its 4; time passes.
        [
            put(0, 0, 1, 10, 0, b"a"),
            put(1, 0, 1, 10, 0, b"b"),
            put(2, 0, 1, 10, 0, b"c"),
            put(2, 1, 1, 10, 0, b"c"),
            put(3, 2, 1, 10, 0, b"d"),
            put(4, 2, 1, 10, 0, b"e"),
            vec![2, 0, 20],
            put(4, 2, 2, 10, 0, b"e"),
            vec![3, 1],
        ]
        .concat(),
    ]
}

fn provider_entry(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Refused;
    };
    match ProviderEntry::decode(text) {
        Some(entry) => {
            let again = ProviderEntry::decode(&entry.encode())
                .expect("an entry re-encodes to a decodable one");
            assert_eq!(again, entry, "an entry survives encode and decode");
            Outcome::Accepted
        }
        None => Outcome::Refused,
    }
}

fn provider_entries() -> Vec<Vec<u8>> {
    let entry = ProviderEntry {
        provider: peer(5),
        addrs: vec!["/ip4/127.0.0.1/tcp/9090".parse().expect("a multiaddr")],
        expires_at_ms: NOW_MS,
    };
    vec![entry.encode().into_bytes()]
}
