//! Names for peers that people can read and say out loud.
//!
//! A libp2p peer id is a 52-character base58 string that starts with `12D3KooW` for every
//! Ed25519 key, so neither its head nor the whole is useful on screen. [`short_id`] keeps the tail,
//! which is where ids differ, and [`peer_name`] maps the id's multihash digest onto an
//! "adjective-animal" pair. The name is derived, never chosen, so it cannot be spoofed apart
//! from the id and two views of the same peer always agree on it.

use libp2p_identity::PeerId;

const ADJECTIVES: [&str; 64] = [
    "amber",
    "brave",
    "brisk",
    "calm",
    "clever",
    "coral",
    "crimson",
    "curious",
    "dapper",
    "eager",
    "fancy",
    "fierce",
    "frosty",
    "gentle",
    "gilded",
    "glad",
    "golden",
    "happy",
    "hazel",
    "humble",
    "icy",
    "jade",
    "jolly",
    "keen",
    "kind",
    "lively",
    "lucky",
    "lunar",
    "mellow",
    "merry",
    "misty",
    "nimble",
    "noble",
    "ochre",
    "olive",
    "patient",
    "plucky",
    "polar",
    "proud",
    "quick",
    "quiet",
    "rapid",
    "rosy",
    "rusty",
    "sandy",
    "silent",
    "silver",
    "sleepy",
    "snowy",
    "solar",
    "spry",
    "steady",
    "stormy",
    "sunny",
    "swift",
    "tidy",
    "velvet",
    "vivid",
    "wandering",
    "witty",
    "wise",
    "woolly",
    "zany",
    "zesty",
];

const ANIMALS: [&str; 64] = [
    "albatross",
    "badger",
    "beaver",
    "bison",
    "bobcat",
    "camel",
    "caribou",
    "cheetah",
    "condor",
    "coyote",
    "crane",
    "dingo",
    "dolphin",
    "eagle",
    "egret",
    "falcon",
    "ferret",
    "finch",
    "fox",
    "gazelle",
    "gecko",
    "heron",
    "hedgehog",
    "ibis",
    "jackal",
    "jaguar",
    "koala",
    "lemur",
    "leopard",
    "lynx",
    "magpie",
    "marmot",
    "marten",
    "meerkat",
    "mole",
    "moose",
    "narwhal",
    "newt",
    "ocelot",
    "orca",
    "osprey",
    "otter",
    "owl",
    "panda",
    "pelican",
    "penguin",
    "puffin",
    "quail",
    "rabbit",
    "raven",
    "salmon",
    "seal",
    "shrew",
    "sparrow",
    "stoat",
    "swan",
    "tapir",
    "tiger",
    "toucan",
    "turtle",
    "walrus",
    "weasel",
    "wolf",
    "yak",
];

/// The human-friendly name of a peer, such as `"swift-otter"`: derived from its id.
pub fn peer_name(peer: &PeerId) -> String {
    // The multihash ends with the key material (Ed25519) or its SHA-256 (larger keys); both are
    // uniformly distributed, so the last two bytes pick the words without bias.
    let bytes = peer.to_bytes();
    let n = bytes.len();
    let adjective = ADJECTIVES[usize::from(bytes[n - 2]) % ADJECTIVES.len()];
    let animal = ANIMALS[usize::from(bytes[n - 1]) % ANIMALS.len()];
    format!("{adjective}-{animal}")
}

/// The short form of a peer id for display: `…` followed by its last 8 characters.
pub fn short_id(peer: &PeerId) -> String {
    short_text(&peer.to_base58())
}

/// [`short_id`] of a peer id already in text form (as views carry them).
pub fn short_text(peer_id: &str) -> String {
    let tail: String = peer_id
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// The public key inside an identity-multihash peer id: Ed25519 peer ids carry their key, so a
/// signature by such a peer can be checked with nothing but its id.
pub fn inline_public_key(peer: &PeerId) -> Option<libp2p_identity::PublicKey> {
    let multihash = peer.as_ref();
    // 0x00 is the identity multihash: the digest is the protobuf-encoded public key.
    if multihash.code() != 0x00 {
        return None;
    }
    libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    #[test]
    fn name_is_stable_for_an_id_and_has_two_words() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let name = peer_name(&peer);
        assert_eq!(name, peer_name(&peer));
        let words: Vec<_> = name.split('-').collect();
        assert_eq!(words.len(), 2, "{name}");
        assert!(ADJECTIVES.contains(&words[0]) && ANIMALS.contains(&words[1]));
    }

    #[test]
    fn names_spread_over_many_peers() {
        let names: std::collections::HashSet<_> = (0..200)
            .map(|_| peer_name(&Keypair::generate_ed25519().public().to_peer_id()))
            .collect();
        // 4096 possible names, 200 draws: collisions are expected to be a handful at most.
        assert!(names.len() > 180, "only {} distinct names", names.len());
    }

    #[test]
    fn short_id_keeps_the_tail() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let short = short_id(&peer);
        assert!(peer.to_base58().ends_with(short.trim_start_matches('…')));
        assert_eq!(short.chars().count(), 9);
    }
}
