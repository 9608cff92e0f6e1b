//! Announcing the services a peer offers: which DHT entries to write, and when.
//!
//! 1. Offering a service writes its provider record (`svc/<name>`), the catalog's (`svc`) and
//!    two signed records: the descriptor (`svc/<name>/<peer>`) and the peer's index
//!    (`svc/@<peer>`), both living `record_ttl`.
//! 2. While the peer offers services, the records are written again every `renew_every`
//!    (shorter than their lifetime), so they outlive no peer by more than `record_ttl`:
//!    announcements disappear with the peer that made them. Provider records are re-announced
//!    by Kademlia itself, and expire with the DHT's provider lifetime.
//! 3. An announcement that failed (no peers to ask yet, a lookup that timed out) is retried
//!    after `retry_after`, so a peer that offers services before it has joined the network
//!    announces them once it has.
//! 4. Withdrawing a service removes its descriptor (a signed tombstone) and rewrites the index;
//!    the last one withdrawn removes the index and leaves the catalog. Provider records are
//!    dropped locally; copies elsewhere expire (callers that still find them are told "does not
//!    offer the service" and go on to the next provider).
//!
//! Time enters as `now`; renewals come out of [`Announcer::poll`], due at
//! [`Announcer::poll_timeout`].

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use web_time::{Duration, Instant};

use super::descriptor::{Descriptor, Index, catalog_key, descriptor_key, index_key, provider_key};
use crate::peers::millis;

/// Lifetimes of announcements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Lifetime of the descriptor and index records.
    pub record_ttl: Duration,
    /// How often they are written again while offered.
    pub renew_every: Duration,
    /// How soon a failed announcement is tried again.
    pub retry_after: Duration,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            record_ttl: Duration::from_secs(300),
            renew_every: Duration::from_secs(120),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// One DHT write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// Announce that we provide `key`.
    Provide(String),
    /// Stop providing `key` (locally).
    StopProviding(String),
    /// Store a signed record.
    Put {
        /// Its key.
        key: String,
        /// Its value.
        value: String,
        /// Its lifetime, ms.
        ttl_ms: u64,
    },
    /// Remove our record under the key.
    Remove(String),
}

/// What one peer has announced, and when to renew it.
#[derive(Debug)]
pub struct Announcer {
    config: AnnounceConfig,
    me: PeerId,
    offered: BTreeMap<String, Descriptor>,
    next: Option<Instant>,
}

impl Announcer {
    /// Nothing announced yet.
    pub fn new(me: PeerId, config: AnnounceConfig) -> Self {
        Self {
            config,
            me,
            offered: BTreeMap::new(),
            next: None,
        }
    }

    /// `descriptor` is offered (again, perhaps changed): what to write now (rule 1).
    pub fn on_offer(&mut self, descriptor: Descriptor, now: Instant) -> Vec<Announcement> {
        let first = self.offered.is_empty();
        let name = descriptor.name.clone();
        let mut out = vec![Announcement::Provide(provider_key(&name))];
        if first {
            out.push(Announcement::Provide(catalog_key()));
        }
        out.push(self.put_descriptor(&descriptor));
        self.offered.insert(name, descriptor);
        out.push(self.put_index());
        self.next = Some(now + self.config.renew_every);
        out
    }

    /// `name` is withdrawn: what to write now (rule 4).
    pub fn on_withdraw(&mut self, name: &str) -> Vec<Announcement> {
        if self.offered.remove(name).is_none() {
            return Vec::new();
        }
        let mut out = vec![
            Announcement::Remove(descriptor_key(name, &self.me)),
            Announcement::StopProviding(provider_key(name)),
        ];
        if self.offered.is_empty() {
            out.push(Announcement::Remove(index_key(&self.me)));
            out.push(Announcement::StopProviding(catalog_key()));
            self.next = None;
        } else {
            out.push(self.put_index());
        }
        out
    }

    /// An announcement failed: try everything again soon (rule 3).
    pub fn on_failed(&mut self, now: Instant) {
        if !self.offered.is_empty() {
            let retry = now + self.config.retry_after;
            self.next = Some(self.next.map_or(retry, |n| n.min(retry)));
        }
    }

    /// The renewals due (rule 2, and the retries of rule 3).
    pub fn poll(&mut self, now: Instant) -> Vec<Announcement> {
        match self.next {
            Some(at) if at <= now => {}
            _ => return Vec::new(),
        }
        self.next = Some(now + self.config.renew_every);
        let mut out: Vec<Announcement> = self
            .offered
            .keys()
            .map(|name| Announcement::Provide(provider_key(name)))
            .collect();
        out.push(Announcement::Provide(catalog_key()));
        out.extend(self.offered.values().map(|d| self.put_descriptor(d)));
        out.push(self.put_index());
        out
    }

    /// When [`poll`](Self::poll) has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    fn put_descriptor(&self, descriptor: &Descriptor) -> Announcement {
        Announcement::Put {
            key: descriptor_key(&descriptor.name, &self.me),
            value: descriptor.encode(),
            ttl_ms: millis(self.config.record_ttl),
        }
    }

    fn put_index(&self) -> Announcement {
        let index = Index {
            services: crate::map_from(
                self.offered
                    .values()
                    .map(|d| (d.name.clone(), d.version.clone())),
            ),
        };
        Announcement::Put {
            key: index_key(&self.me),
            value: index.encode(),
            ttl_ms: millis(self.config.record_ttl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::descriptor::MessageType;

    fn me() -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([3; 32])
            .expect("key")
            .public()
            .to_peer_id()
    }

    fn descriptor(name: &str) -> Descriptor {
        Descriptor::new(name, "1", "", [("go".to_owned(), MessageType::default())]).unwrap()
    }

    fn keys(out: &[Announcement]) -> Vec<String> {
        out.iter()
            .map(|a| match a {
                Announcement::Provide(k) => format!("provide {k}"),
                Announcement::StopProviding(k) => format!("stop {k}"),
                Announcement::Put { key, .. } => format!("put {key}"),
                Announcement::Remove(k) => format!("remove {k}"),
            })
            .collect()
    }

    #[test]
    fn rule_1_an_offer_writes_provider_records_descriptor_and_index() {
        let mut a = Announcer::new(me(), AnnounceConfig::default());
        let now = Instant::now();
        let out = a.on_offer(descriptor("echo"), now);
        let p = me();
        assert_eq!(
            keys(&out),
            vec![
                "provide svc/echo".to_owned(),
                "provide svc".to_owned(),
                format!("put svc/echo/{p}"),
                format!("put svc/@{p}"),
            ]
        );
        match &out[3] {
            Announcement::Put { value, ttl_ms, .. } => {
                assert_eq!(value, r#"{"services":{"echo":"1"}}"#);
                assert_eq!(*ttl_ms, 300_000);
            }
            other => panic!("{other:?}"),
        }
        // A second service: no second catalog entry; the index lists both.
        let out = a.on_offer(descriptor("time"), now);
        assert!(!keys(&out).contains(&"provide svc".to_owned()));
        assert!(
            matches!(out.last(), Some(Announcement::Put { value, .. }) if value.contains("echo") && value.contains("time"))
        );
    }

    #[test]
    fn rule_2_records_are_renewed_before_they_expire() {
        let config = AnnounceConfig::default();
        let mut a = Announcer::new(me(), config.clone());
        let now = Instant::now();
        a.on_offer(descriptor("echo"), now);
        assert!(config.renew_every < config.record_ttl);
        assert_eq!(a.poll_timeout(), Some(now + config.renew_every));
        assert!(
            a.poll(now + config.renew_every - Duration::from_millis(1))
                .is_empty()
        );
        let renewed = a.poll(now + config.renew_every);
        assert_eq!(
            renewed
                .iter()
                .filter(|x| matches!(x, Announcement::Put { .. }))
                .count(),
            2
        );
        assert_eq!(a.poll_timeout(), Some(now + config.renew_every * 2));
    }

    #[test]
    fn rule_3_a_failed_announcement_is_retried_soon() {
        let config = AnnounceConfig::default();
        let mut a = Announcer::new(me(), config.clone());
        let now = Instant::now();
        a.on_failed(now);
        assert_eq!(a.poll_timeout(), None, "nothing offered, nothing to retry");
        a.on_offer(descriptor("echo"), now);
        a.on_failed(now);
        assert_eq!(a.poll_timeout(), Some(now + config.retry_after));
        assert_eq!(keys(&a.poll(now + config.retry_after)).len(), 4);
    }

    #[test]
    fn rule_4_withdrawing_removes_the_descriptor_and_the_last_one_the_index() {
        let mut a = Announcer::new(me(), AnnounceConfig::default());
        let now = Instant::now();
        let p = me();
        a.on_offer(descriptor("echo"), now);
        a.on_offer(descriptor("time"), now);
        assert_eq!(
            keys(&a.on_withdraw("echo")),
            vec![
                format!("remove svc/echo/{p}"),
                "stop svc/echo".to_owned(),
                format!("put svc/@{p}")
            ]
        );
        assert!(a.on_withdraw("echo").is_empty());
        assert_eq!(
            keys(&a.on_withdraw("time")),
            vec![
                format!("remove svc/time/{p}"),
                "stop svc/time".to_owned(),
                format!("remove svc/@{p}"),
                "stop svc".to_owned()
            ]
        );
        assert_eq!(a.poll_timeout(), None);
    }
}
