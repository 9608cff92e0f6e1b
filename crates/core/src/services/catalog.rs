//! The catalog: every service the network offers, read from the DHT.
//!
//! A DHT cannot list its keys, so the catalog is gathered in three rounds of lookups, each
//! started as soon as the one before answers:
//!
//! 1. the providers of `svc`: every peer that offers at least one service;
//! 2. each one's index, `svc/@<peer>`: the names and versions it offers;
//! 3. each descriptor, `svc/<name>/<peer>`: the message types and their shapes.
//!
//! A peer's entries that are missing or unreadable leave it out (its records may have expired
//! while its provider record lives on); at most [`MAX_SURVEYED`] peers are read, with at most
//! [`MAX_SURVEY_LOOKUPS`] lookups running at once (the others wait their turn), so that a
//! survey of a large network neither fills the DHT's table of running operations, refusing the
//! user's own, nor floods the peers with lookups. The result is a [`Catalog`] by service name.
//! Time plays no part: every lookup ends by the DHT's own deadline, so the survey ends too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::descriptor::{
    Descriptor, Index, MessageType, ServiceKey, catalog_key, descriptor_key, index_key, parse_key,
};
use crate::names::peer_name;

/// Providers read per survey at most.
pub const MAX_SURVEYED: usize = 64;

/// Lookups of one survey running at once, at most.
pub const MAX_SURVEY_LOOKUPS: usize = 4;

/// One lookup the driver makes for a survey.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lookup {
    /// The providers of a key.
    Providers(String),
    /// The record under a key.
    Record(String),
}

/// A service in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// Its name.
    pub name: String,
    /// Who offers it.
    pub providers: Vec<ProviderListing>,
}

impl Listing {
    /// The message types its providers declare, sorted, each once.
    pub fn types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .providers
            .iter()
            .flat_map(|p| p.types.keys().cloned())
            .collect();
        types.sort();
        types.dedup();
        types
    }
}

/// One provider of a service, with its declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderListing {
    /// Its peer id.
    pub peer_id: String,
    /// Its name.
    pub peer_name: String,
    /// The version it offers.
    pub version: String,
    /// What the service does, as it says.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The message types it answers.
    pub types: BTreeMap<String, MessageType>,
}

/// Every service found, by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// The services.
    pub services: Vec<Listing>,
    /// Peers that announce services but whose index or descriptors could not be read.
    pub unreadable: usize,
}

/// A survey in progress.
#[derive(Debug, Default)]
pub struct Survey {
    /// Lookups asked for and not yet answered, running or waiting.
    pending: BTreeSet<Lookup>,
    /// Lookups waiting for one of the [`MAX_SURVEY_LOOKUPS`] places (also in `pending`).
    waiting: VecDeque<Lookup>,
    peers: BTreeSet<PeerId>,
    failed: BTreeSet<PeerId>,
    descriptors: BTreeMap<(String, PeerId), Descriptor>,
}

impl Survey {
    /// A survey and its first lookup.
    pub fn start() -> (Self, Vec<Lookup>) {
        let first = Lookup::Providers(catalog_key());
        let mut survey = Self::default();
        survey.pending.insert(first.clone());
        (survey, vec![first])
    }

    /// One running lookup answered: `found` joins the queue, and the lookups to start now are
    /// returned (at most [`MAX_SURVEY_LOOKUPS`] run at once).
    fn answered(&mut self, found: Vec<Lookup>) -> Vec<Lookup> {
        self.waiting.extend(found);
        let running = self.pending.len() - self.waiting.len();
        let free = MAX_SURVEY_LOOKUPS.saturating_sub(running);
        self.waiting.drain(..free.min(self.waiting.len())).collect()
    }

    /// Whether every lookup has answered.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// The providers of `key` were found (`peers` empty when the lookup failed).
    pub fn on_providers(&mut self, key: &str, peers: &[PeerId]) -> Vec<Lookup> {
        if !self.pending.remove(&Lookup::Providers(key.to_owned())) {
            return Vec::new();
        }
        let mut next = Vec::new();
        for peer in peers.iter().take(MAX_SURVEYED) {
            if self.peers.insert(*peer) {
                let lookup = Lookup::Record(index_key(peer));
                self.pending.insert(lookup.clone());
                next.push(lookup);
            }
        }
        self.answered(next)
    }

    /// The record under `key` was read (`None`: not found, or the lookup failed).
    pub fn on_record(&mut self, key: &str, value: Option<&[u8]>) -> Vec<Lookup> {
        if !self.pending.remove(&Lookup::Record(key.to_owned())) {
            return Vec::new();
        }
        let mut next = Vec::new();
        match parse_key(key.as_bytes()) {
            Some(Ok(ServiceKey::Index(peer))) => match value.map(Index::decode) {
                Some(Ok(index)) if !index.services.is_empty() => {
                    for name in index.services.keys() {
                        let lookup = Lookup::Record(descriptor_key(name, &peer));
                        if self.pending.insert(lookup.clone()) {
                            next.push(lookup);
                        }
                    }
                }
                _ => {
                    self.failed.insert(peer);
                }
            },
            Some(Ok(ServiceKey::Descriptor { name, peer })) => {
                match value.map(Descriptor::decode) {
                    Some(Ok(d)) if d.name == name => {
                        self.descriptors.insert((name, peer), d);
                    }
                    _ => {
                        self.failed.insert(peer);
                    }
                }
            }
            _ => {}
        }
        self.answered(next)
    }

    /// The catalog gathered so far.
    pub fn catalog(&self) -> Catalog {
        // The descriptors are in name order: each name's providers are next to each other.
        let mut services: Vec<Listing> = Vec::new();
        for ((name, peer), d) in &self.descriptors {
            let provider = ProviderListing {
                peer_id: peer.to_base58(),
                peer_name: peer_name(peer),
                version: d.version.clone(),
                description: d.description.clone(),
                types: d.types.clone(),
            };
            match services.last_mut() {
                Some(listing) if listing.name == *name => listing.providers.push(provider),
                _ => services.push(Listing {
                    name: name.clone(),
                    providers: vec![provider],
                }),
            }
        }
        let listed: BTreeSet<PeerId> = self.descriptors.keys().map(|(_, p)| *p).collect();
        Catalog {
            services,
            unreadable: self.failed.difference(&listed).count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
            .expect("key")
            .public()
            .to_peer_id()
    }

    fn descriptor(name: &str, version: &str) -> Descriptor {
        Descriptor::new(
            name,
            version,
            "",
            [("go".to_owned(), MessageType::default())],
        )
        .unwrap()
    }

    fn index(names: &[&str]) -> Vec<u8> {
        Index {
            services: names
                .iter()
                .map(|n| ((*n).to_owned(), "1".to_owned()))
                .collect(),
        }
        .encode()
        .into_bytes()
    }

    #[test]
    fn a_survey_reads_providers_then_indexes_then_descriptors() {
        let (a, b, gone) = (peer(1), peer(2), peer(3));
        let (mut s, first) = Survey::start();
        assert_eq!(first, vec![Lookup::Providers("svc".into())]);
        let next = s.on_providers("svc", &[a, b, gone]);
        assert_eq!(next.len(), 3);
        assert!(!s.is_done());
        let from_a = s.on_record(&index_key(&a), Some(&index(&["echo", "lucas-lehmer"])));
        assert_eq!(from_a.len(), 2);
        let from_b = s.on_record(&index_key(&b), Some(&index(&["echo"])));
        assert_eq!(from_b, vec![Lookup::Record(descriptor_key("echo", &b))]);
        // A peer whose records expired while its provider record lives on is left out.
        assert!(s.on_record(&index_key(&gone), None).is_empty());
        for (name, p, v) in [("echo", a, "1"), ("lucas-lehmer", a, "1"), ("echo", b, "2")] {
            let d = descriptor(name, v).encode();
            assert!(
                s.on_record(&descriptor_key(name, &p), Some(d.as_bytes()))
                    .is_empty()
            );
        }
        assert!(s.is_done());
        let catalog = s.catalog();
        let names: Vec<&str> = catalog.services.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, vec!["echo", "lucas-lehmer"]);
        let echo = &catalog.services[0];
        assert_eq!(echo.providers.len(), 2);
        assert!(
            echo.providers
                .iter()
                .any(|p| p.version == "2" && p.peer_id == b.to_base58())
        );
        assert_eq!(catalog.unreadable, 1);
    }

    #[test]
    fn answers_nobody_asked_for_and_bad_values_change_nothing() {
        let a = peer(1);
        let (mut s, _) = Survey::start();
        assert!(
            s.on_record(&index_key(&a), Some(&index(&["echo"])))
                .is_empty(),
            "not asked for"
        );
        s.on_providers("svc", &[a]);
        assert!(s.on_record(&index_key(&a), Some(b"garbage")).is_empty());
        assert!(s.is_done());
        assert!(s.catalog().services.is_empty());
        assert_eq!(s.catalog().unreadable, 1);
        // A descriptor stored under another service's key is not listed.
        let (mut s, _) = Survey::start();
        s.on_providers("svc", &[a]);
        s.on_record(&index_key(&a), Some(&index(&["echo"])));
        let wrong = descriptor("time", "1").encode();
        s.on_record(&descriptor_key("echo", &a), Some(wrong.as_bytes()));
        assert!(s.catalog().services.is_empty());
    }

    #[test]
    fn a_survey_reads_at_most_max_surveyed_peers_a_few_lookups_at_a_time() {
        let peers: Vec<PeerId> = (0..=MAX_SURVEYED as u8).map(|i| peer(i + 10)).collect();
        let (mut s, _) = Survey::start();
        let mut running = s.on_providers("svc", &peers);
        assert_eq!(running.len(), MAX_SURVEY_LOOKUPS);
        let mut read = Vec::new();
        // Every answer (here: an index naming one service) frees a place for the next lookup.
        while let Some(lookup) = running.pop() {
            let Lookup::Record(key) = &lookup else {
                panic!("records only after the providers");
            };
            let value = key.starts_with("svc/@").then(|| index(&["echo"]));
            running.extend(s.on_record(key, value.as_deref()));
            assert!(
                running.len() <= MAX_SURVEY_LOOKUPS,
                "{} at once",
                running.len()
            );
            read.push(lookup);
        }
        assert!(s.is_done());
        let indexes = read
            .iter()
            .filter(|l| matches!(l, Lookup::Record(k) if k.starts_with("svc/@")));
        assert_eq!(indexes.count(), MAX_SURVEYED);
        assert_eq!(
            read.len(),
            2 * MAX_SURVEYED,
            "an index and a descriptor per peer"
        );
    }
}
