//! Kademlia keys, XOR distance and a peer's routing table, for the model.
//!
//! Keys are libp2p-kad's: the SHA-256 of a peer id's bytes or of a record key
//! ([`libp2p::kad::KBucketKey`]), so the model's peers sit where real ones would. A routing table
//! has 256 buckets of at most k peers, bucket `i` holding the peers at distance `[2^i, 2^(i+1))`.
//! A full bucket keeps the peers it has and turns newcomers away (libp2p-kad keeps a newcomer
//! pending and lets it replace a disconnected entry only after a minute, longer than a lookup).

/// A 256-bit key, as two big-endian halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key(u128, u128);

/// The XOR distance of two keys; ordered as a 256-bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Distance(u128, u128);

impl Key {
    /// The key of 32 hashed bytes (big-endian).
    pub(crate) fn from_hashed(bytes: &[u8]) -> Self {
        let mut hi = [0u8; 16];
        let mut lo = [0u8; 16];
        hi.copy_from_slice(&bytes[..16]);
        lo.copy_from_slice(&bytes[16..32]);
        Self(u128::from_be_bytes(hi), u128::from_be_bytes(lo))
    }

    /// A peer id's key, as libp2p-kad computes it.
    pub(crate) fn of_peer(peer: &libp2p::PeerId) -> Self {
        Self::from_hashed(libp2p::kad::KBucketKey::from(*peer).hashed_bytes())
    }

    /// A record (or provider) key's key, as libp2p-kad computes it.
    pub(crate) fn of_record(key: &[u8]) -> Self {
        let key = libp2p::kad::RecordKey::new(&key);
        Self::from_hashed(libp2p::kad::KBucketKey::new(key).hashed_bytes())
    }

    /// A key from its two halves.
    #[cfg(test)]
    pub(crate) fn from_u128(hi: u128, lo: u128) -> Self {
        Self(hi, lo)
    }

    /// A random key.
    pub(crate) fn random(rng: &mut impl rand::Rng) -> Self {
        Self(rng.r#gen(), rng.r#gen())
    }

    /// The distance to `other`.
    pub(crate) fn distance(&self, other: &Key) -> Distance {
        Distance(self.0 ^ other.0, self.1 ^ other.1)
    }
}

impl Distance {
    /// The bucket a peer at this distance falls in (`None` for distance 0: ourselves).
    pub(crate) fn bucket(&self) -> Option<usize> {
        if self.0 != 0 {
            Some(255 - self.0.leading_zeros() as usize)
        } else if self.1 != 0 {
            Some(127 - self.1.leading_zeros() as usize)
        } else {
            None
        }
    }
}

/// A routing table: peer indices with their keys, at most `k` per bucket.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    own: Key,
    k: usize,
    entries: Vec<(u32, Key)>,
    per_bucket: Vec<u8>,
}

impl Table {
    /// An empty table for the peer at `own`.
    pub(crate) fn new(own: Key, k: usize) -> Self {
        Self {
            own,
            k,
            entries: Vec::new(),
            per_bucket: vec![0; 256],
        }
    }

    /// Peers in the table.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `peer` is in the table.
    pub(crate) fn contains(&self, peer: u32) -> bool {
        self.entries.iter().any(|(p, _)| *p == peer)
    }

    /// Adds `peer` unless it is there already or its bucket is full; whether it was added.
    pub(crate) fn insert(&mut self, peer: u32, key: Key) -> bool {
        let Some(bucket) = self.own.distance(&key).bucket() else {
            return false;
        };
        if usize::from(self.per_bucket[bucket]) >= self.k || self.contains(peer) {
            return false;
        }
        self.per_bucket[bucket] += 1;
        self.entries.push((peer, key));
        true
    }

    /// Removes `peer`; whether it was there.
    pub(crate) fn remove(&mut self, peer: u32) -> bool {
        let Some(i) = self.entries.iter().position(|(p, _)| *p == peer) else {
            return false;
        };
        let (_, key) = self.entries.swap_remove(i);
        if let Some(bucket) = self.own.distance(&key).bucket() {
            self.per_bucket[bucket] -= 1;
        }
        true
    }

    /// The `n` peers closest to `target`, closest first, leaving out `except`.
    pub(crate) fn closest(&self, target: &Key, n: usize, except: Option<u32>) -> Vec<(u32, Key)> {
        let mut by_distance: Vec<(Distance, u32, Key)> = self
            .entries
            .iter()
            .filter(|(p, _)| Some(*p) != except)
            .map(|(p, k)| (k.distance(target), *p, *k))
            .collect();
        if by_distance.len() > n {
            by_distance.select_nth_unstable_by_key(n, |e| e.0);
            by_distance.truncate(n);
        }
        by_distance.sort_unstable_by_key(|e| e.0);
        by_distance.into_iter().map(|(_, p, k)| (p, k)).collect()
    }

    /// The buckets a bootstrap refreshes: every bucket farther than the first non-empty one
    /// (libp2p-kad's rule), farthest last.
    pub(crate) fn buckets_to_refresh(&self) -> std::ops::RangeInclusive<usize> {
        let first = self.per_bucket.iter().position(|n| *n > 0).unwrap_or(255);
        (first + 1)..=255
    }

    /// A target for refreshing `bucket`: a random key, drawn up to 16 times until one falls in
    /// the bucket (libp2p-kad draws random peer ids the same way, so close buckets are mostly
    /// refreshed with a farther key).
    pub(crate) fn refresh_target(&self, bucket: usize, rng: &mut impl rand::Rng) -> Key {
        let mut target = Key::random(rng);
        for _ in 0..16 {
            if self.own.distance(&target).bucket() == Some(bucket) {
                break;
            }
            target = Key::random(rng);
        }
        target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_and_buckets_agree_with_libp2p_kad() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let a = libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id();
            let b = libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id();
            let theirs = libp2p::kad::KBucketKey::from(a)
                .distance(&libp2p::kad::KBucketKey::from(b))
                .ilog2()
                .map(|i| i as usize);
            assert_eq!(
                Key::of_peer(&a).distance(&Key::of_peer(&b)).bucket(),
                theirs
            );
            let record = Key::of_record(b"/tabmesh/color");
            let theirs = libp2p::kad::KBucketKey::from(a)
                .distance(&libp2p::kad::KBucketKey::new(libp2p::kad::RecordKey::new(
                    &"/tabmesh/color",
                )))
                .ilog2()
                .map(|i| i as usize);
            assert_eq!(Key::of_peer(&a).distance(&record).bucket(), theirs);
            let _ = Key::random(&mut rng);
        }
        assert_eq!(Distance(0, 0).bucket(), None);
        assert_eq!(Distance(0, 1).bucket(), Some(0));
        assert_eq!(Distance(1, 0).bucket(), Some(128));
        assert_eq!(Distance(u128::MAX, 0).bucket(), Some(255));
    }

    #[test]
    fn a_full_bucket_turns_newcomers_away_and_closest_orders_by_distance() {
        let own = Key(0, 0);
        let mut table = Table::new(own, 2);
        // Peers 4, 5, 6 are all in bucket 2 (distance 4..8).
        assert!(table.insert(4, Key(0, 4)));
        assert!(table.insert(5, Key(0, 5)));
        assert!(!table.insert(6, Key(0, 6)), "bucket 2 is full");
        assert!(!table.insert(4, Key(0, 4)), "there already");
        assert!(!table.insert(9, own), "ourselves");
        assert!(table.insert(1, Key(0, 1)));
        let near_seven: Vec<u32> = table
            .closest(&Key(0, 7), 2, None)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(near_seven, [5, 4], "7^5 = 2 < 7^4 = 3");
        let without: Vec<u32> = table
            .closest(&Key(0, 7), 5, Some(5))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(without, [4, 1]);
        assert!(table.remove(4));
        assert!(table.insert(6, Key(0, 6)), "room again");
        assert_eq!(table.buckets_to_refresh(), 1..=255, "bucket 0 holds peer 1");
    }
}
