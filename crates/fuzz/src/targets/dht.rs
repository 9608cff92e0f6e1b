//! Kademlia records: the signed envelope, its checks, and the stored provider entries.

use tabmesh_core::dht::record::{self, Precedence, RecordLimits, SignedRecord};
use tabmesh_core::dht::store::ProviderEntry;
use tabmesh_core::services::descriptor;

use super::{key, outcome, peer};
use crate::{Outcome, Script, Target};

pub(super) const RECORD: Target = Target {
    name: "dht_record",
    about: "a signed DHT record envelope under a key, checked and compared with a held copy",
    run: record,
    seeds: records,
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
