//! UI state: one Yew reducer, fed by the node's views and by the answers to the page's requests.
//!
//! Everything the page shows comes from here: components dispatch [`Action`]s and never keep
//! node state of their own; commands leave through the [`NodeClient`](crate::node_client).

use std::ops::Deref;
use std::rc::Rc;

use tabmesh_core::dht::{DhtReply, DhtSection};
use tabmesh_core::gimps::node::LoggedMessage;
use tabmesh_core::ledger::BanView;
use tabmesh_core::peers::PeerView;
use tabmesh_core::services::Catalog;
use tabmesh_core::services::ServicesSection;
use tabmesh_core::snapshot::state::SnapshotSection;
use tabmesh_core::trace::TraceSection;
use tabmesh_core::trace::assemble::Trace;
use tabmesh_core::view::{Counters, GimpsSection, RelayView};
use tabmesh_core::wire_log::WireEvent;
use tabmesh_node::NodeView;
use tabmesh_node::services::CallAnswer;
use yew::Reducible;

/// The latest DHT request made with the panel's form and, once known, its answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DhtRequestLine {
    /// The request's id: only the latest request's answer is shown.
    pub(crate) id: u64,
    /// What was asked, e.g. `get "greeting"`.
    pub(crate) asked: String,
    /// `None` while the node works on it.
    pub(crate) answer: Option<Result<DhtReply, String>>,
}

/// The latest call made with the Services panel's form and, once known, its answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallLine {
    /// The call's id: only the latest call's answer is shown.
    pub(crate) id: u64,
    /// What was called, e.g. `echo/echo`.
    pub(crate) asked: String,
    /// `None` while the call is under way; the error is `(code, message)`.
    pub(crate) answer: Option<Result<CallAnswer, (String, String)>>,
}

/// The trace the Tracing panel shows: being gathered, gathered, or why not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraceLine {
    /// The request's id: only the latest request's answer is shown.
    pub(crate) id: u64,
    /// The trace asked for.
    pub(crate) trace_id: String,
    /// `None` while the peers it crossed are asked.
    pub(crate) answer: Option<Result<Trace, String>>,
}

/// The network's catalog of services as last read.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CatalogLine {
    /// A read is under way.
    pub(crate) loading: bool,
    /// The last catalog read, if any.
    pub(crate) catalog: Option<Catalog>,
    /// Why the last read failed, if it did.
    pub(crate) error: Option<String>,
}

/// One part of the node's view, as a panel's property: read in place from the view it came
/// in, with a version that changes only when what the panel shows of it does.
///
/// Two parts compare by version: when Yew checks a panel's properties nothing is copied out of
/// the view or compared field by field again, and a panel whose part is unchanged is not
/// rendered again. `same` says what counts as a change when a panel shows less than its part
/// holds: the Services panel needs to know which peers are connected and how, not when each
/// was last heard; the DHT panel shows times to expiry to the second or the minute. A part
/// keeps the view it was read from alive, so the page holds at most one view per part.
pub(crate) struct Part<T: ?Sized + 'static> {
    view: Rc<NodeView>,
    read: fn(&NodeView) -> &T,
    /// Whether two values of the part show the same (equality, unless the panel shows less
    /// than the part holds).
    same: fn(&T, &T) -> bool,
    version: u64,
}

impl<T: ?Sized + PartialEq> Part<T> {
    fn new(view: &Rc<NodeView>, read: fn(&NodeView) -> &T) -> Self {
        Self::shown(view, read, T::eq)
    }
}

impl<T: ?Sized> Part<T> {
    /// A part that changes only when `same` says it does.
    fn shown(view: &Rc<NodeView>, read: fn(&NodeView) -> &T, same: fn(&T, &T) -> bool) -> Self {
        Self {
            view: Rc::clone(view),
            read,
            same,
            version: 0,
        }
    }

    /// The part as read from `view`: this one if it shows the same, else a new version.
    fn next(&self, view: &Rc<NodeView>) -> Self {
        if (self.same)((self.read)(view), self) {
            self.clone()
        } else {
            Self {
                view: Rc::clone(view),
                version: self.version + 1,
                ..*self
            }
        }
    }
}

impl<T: ?Sized> Clone for Part<T> {
    fn clone(&self) -> Self {
        Self {
            view: Rc::clone(&self.view),
            read: self.read,
            same: self.same,
            version: self.version,
        }
    }
}

impl<T: ?Sized> Deref for Part<T> {
    type Target = T;

    fn deref(&self) -> &T {
        (self.read)(&self.view)
    }
}

impl<T: ?Sized> PartialEq for Part<T> {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && Rc::ptr_eq(&self.view, &other.view)
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for Part<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("version", &self.version)
            .field("value", &&**self)
            .finish()
    }
}

/// The parts of the latest view the panels show, each versioned on its own.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parts {
    /// The relay link.
    pub(crate) relay: Part<RelayView>,
    /// Connected peers.
    pub(crate) peers: Part<[PeerView]>,
    /// Connected peers, changing only when one comes, goes or changes how it is reached.
    pub(crate) peer_links: Part<[PeerView]>,
    /// Banned peers.
    pub(crate) banned: Part<[BanView]>,
    /// The counters, changing only when the moves to direct connections' ones do.
    pub(crate) upgrades: Part<Counters>,
    /// The latest wire events.
    pub(crate) wire: Part<[WireEvent]>,
    /// The GIMPS section.
    pub(crate) gimps: Part<Option<GimpsSection>>,
    /// The GIMPS gossip log alone (it changes far less often than the search's figures).
    pub(crate) gimps_log: Part<[LoggedMessage]>,
    /// The DHT section.
    pub(crate) dht: Part<Option<DhtSection>>,
    /// The Services section.
    pub(crate) services: Part<Option<ServicesSection>>,
    /// The Tracing section.
    pub(crate) trace: Part<Option<TraceSection>>,
    /// The Snapshot section.
    pub(crate) snapshot: Part<Option<SnapshotSection>>,
}

impl Parts {
    fn new(view: &Rc<NodeView>) -> Self {
        Self {
            relay: Part::new(view, |v| &v.relay),
            peers: Part::new(view, |v| &v.peers),
            peer_links: Part::shown(view, |v| &v.peers, same_links),
            banned: Part::new(view, |v| &v.banned),
            upgrades: Part::shown(view, |v| &v.counters, same_upgrades),
            wire: Part::new(view, |v| &v.wire),
            gimps: Part::new(view, |v| &v.gimps),
            gimps_log: Part::new(view, |v| v.gimps.as_ref().map_or(&[], |g| &g.state.log)),
            dht: Part::shown(view, |v| &v.dht, crate::components::same_dht),
            services: Part::new(view, |v| &v.services),
            trace: Part::new(view, |v| &v.trace),
            snapshot: Part::new(view, |v| &v.snapshot),
        }
    }

    fn next(&self, view: &Rc<NodeView>) -> Self {
        Self {
            relay: self.relay.next(view),
            peers: self.peers.next(view),
            peer_links: self.peer_links.next(view),
            banned: self.banned.next(view),
            upgrades: self.upgrades.next(view),
            wire: self.wire.next(view),
            gimps: self.gimps.next(view),
            gimps_log: self.gimps_log.next(view),
            dht: self.dht.next(view),
            services: self.services.next(view),
            trace: self.trace.next(view),
            snapshot: self.snapshot.next(view),
        }
    }
}

/// Whether two lists of peers hold the same peers, reached the same way.
fn same_links(a: &[PeerView], b: &[PeerView]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.peer_id == b.peer_id && a.connection == b.connection)
}

/// Whether two sets of counters hold the same counts of crossed dials and of the moves to direct
/// connections (the others, the wire events' among them, change all the time and the Peers
/// panel does not show them).
fn same_upgrades(a: &Counters, b: &Counters) -> bool {
    (
        a.crossed_dials,
        a.webrtc_offers,
        a.direct_duplicates_closed,
        a.direct_dials_failed,
    ) == (
        b.crossed_dials,
        b.webrtc_offers,
        b.direct_duplicates_closed,
        b.direct_dials_failed,
    )
}

/// What the UI knows.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AppState {
    /// The latest view of our node; `None` while it starts.
    pub(crate) view: Option<Rc<NodeView>>,
    /// The panels' parts of it.
    pub(crate) parts: Option<Parts>,
    /// Why the node could not start, if it could not.
    pub(crate) fatal: Option<String>,
    /// The DHT form's latest request.
    pub(crate) dht_request: Option<DhtRequestLine>,
    /// The Services form's latest call.
    pub(crate) call: Option<CallLine>,
    /// The network's services.
    pub(crate) catalog: CatalogLine,
    /// The outcome of the last change to what this tab offers (an error, or what was done).
    pub(crate) offer_note: Option<Result<String, String>>,
    /// The trace shown in the Tracing panel.
    pub(crate) trace: Option<TraceLine>,
    /// What the last traced ping did (its trace opens in the panel), or why it failed.
    pub(crate) ping_note: Option<Result<String, String>>,
}

/// Changes to the UI state.
pub(crate) enum Action {
    /// The node published a new view.
    View(Rc<NodeView>),
    /// The node failed to start.
    Fatal(String),
    /// The DHT form sent request `id`.
    DhtAsked {
        /// Its id.
        id: u64,
        /// What was asked.
        asked: String,
    },
    /// The answer to DHT request `id` (or why the form could not send it).
    DhtAnswered {
        /// Its id.
        id: u64,
        /// What was asked.
        asked: String,
        /// The reply, or the reason there is none.
        answer: Result<DhtReply, String>,
    },
    /// The Services form called (`answer: None`) or was answered.
    Called(CallLine),
    /// A catalog read started.
    CatalogAsked,
    /// A catalog read ended.
    CatalogRead(Result<Catalog, String>),
    /// What offering or withdrawing a service did.
    OfferNote(Result<String, String>),
    /// The Tracing panel asked for (`answer: None`) or received a trace.
    Traced(TraceLine),
    /// What a traced ping from the panel did.
    PingNote(Result<String, String>),
}

impl Reducible for AppState {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        let mut next = Self {
            view: self.view.clone(),
            parts: self.parts.clone(),
            fatal: self.fatal.clone(),
            dht_request: self.dht_request.clone(),
            call: self.call.clone(),
            catalog: self.catalog.clone(),
            offer_note: self.offer_note.clone(),
            trace: self.trace.clone(),
            ping_note: self.ping_note.clone(),
        };
        match action {
            Action::View(view) => {
                next.parts = Some(match &self.parts {
                    Some(parts) => parts.next(&view),
                    None => Parts::new(&view),
                });
                next.view = Some(view);
            }
            Action::Fatal(error) => next.fatal = Some(error),
            Action::DhtAsked { id, asked } => {
                next.dht_request = Some(DhtRequestLine {
                    id,
                    asked,
                    answer: None,
                });
            }
            Action::DhtAnswered { id, asked, answer } => {
                // An earlier request that finishes after a later one was sent is not shown.
                let latest = self.dht_request.as_ref().is_none_or(|r| r.id <= id);
                if !latest {
                    return self;
                }
                next.dht_request = Some(DhtRequestLine {
                    id,
                    asked,
                    answer: Some(answer),
                });
            }
            Action::Called(line) => {
                if self.call.as_ref().is_some_and(|c| c.id > line.id) {
                    return self;
                }
                next.call = Some(line);
            }
            Action::CatalogAsked => next.catalog.loading = true,
            Action::CatalogRead(read) => {
                next.catalog.loading = false;
                match read {
                    Ok(catalog) => {
                        next.catalog.catalog = Some(catalog);
                        next.catalog.error = None;
                    }
                    Err(error) => next.catalog.error = Some(error),
                }
            }
            Action::OfferNote(note) => next.offer_note = Some(note),
            Action::Traced(line) => {
                if self.trace.as_ref().is_some_and(|t| t.id > line.id) {
                    return self;
                }
                next.trace = Some(line);
            }
            Action::PingNote(note) => next.ping_note = Some(note),
        }
        Rc::new(next)
    }
}

#[cfg(test)]
mod tests {
    use tabmesh_core::peers::{ConnectionKind, PeerKind};
    use tabmesh_core::view::Counters;
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    fn peer(name: &str, connection: ConnectionKind, last_heard_ms_ago: u64) -> PeerView {
        PeerView {
            peer_id: format!("id-{name}"),
            name: name.to_owned(),
            short_id: name.to_owned(),
            connection,
            connections: 1,
            rtt_ms: Some(0.5),
            last_heard_ms_ago,
            connected_at_ms: 100,
            kind: PeerKind::Tab,
            agent: None,
            strikes: 0,
            upgrade: None,
        }
    }

    fn view(now_ms: u64, peers: Vec<PeerView>) -> Rc<NodeView> {
        Rc::new(NodeView {
            peer_id: "id-us".to_owned(),
            name: "us".to_owned(),
            short_id: "us".to_owned(),
            agent: "test".to_owned(),
            now_ms,
            started_at_ms: 0,
            relay: RelayView::default(),
            peers,
            listen_addrs: Vec::new(),
            wire: Vec::new(),
            wire_kept: 0,
            counters: Counters::default(),
            banned: Vec::new(),
            gimps: None,
            dht: None,
            services: None,
            trace: None,
            snapshot: None,
        })
    }

    #[wasm_bindgen_test]
    fn a_part_keeps_its_version_while_what_it_shows_is_the_same() {
        let first = view(1_000, vec![peer("a", ConnectionKind::Relayed, 10)]);
        let parts = Parts::new(&first);
        // Only the time and when the peer was last heard moved.
        let second = view(1_250, vec![peer("a", ConnectionKind::Relayed, 260)]);
        let next = parts.next(&second);

        assert_ne!(next.peers, parts.peers, "the peers part shows last_heard");
        assert_eq!(next.peers.version, parts.peers.version + 1);
        assert_eq!(
            next.peers[0].last_heard_ms_ago, 260,
            "read from the new view"
        );
        assert_eq!(
            next.peer_links, parts.peer_links,
            "same peers, reached the same way"
        );
        assert_eq!(
            next.peer_links[0].last_heard_ms_ago, 10,
            "still the first view's"
        );
        assert_eq!(next.dht, parts.dht);
        assert_eq!(next.relay, parts.relay);
    }

    #[wasm_bindgen_test]
    fn the_links_part_changes_when_a_peer_is_reached_another_way_or_comes() {
        let parts = Parts::new(&view(1_000, vec![peer("a", ConnectionKind::Relayed, 10)]));
        let direct = parts.next(&view(1_250, vec![peer("a", ConnectionKind::Direct, 10)]));
        assert_ne!(direct.peer_links, parts.peer_links);
        assert_eq!(direct.peer_links[0].connection, ConnectionKind::Direct);

        let more = direct.next(&view(
            1_500,
            vec![
                peer("a", ConnectionKind::Direct, 10),
                peer("b", ConnectionKind::Relayed, 0),
            ],
        ));
        assert_ne!(more.peer_links, direct.peer_links);
        assert_eq!(more.peer_links.version, direct.peer_links.version + 1);
    }

    #[wasm_bindgen_test]
    fn the_upgrades_part_changes_only_with_the_upgrade_counts() {
        let with = |wire_events, webrtc_offers| {
            let mut v = Rc::unwrap_or_clone(view(1_000, Vec::new()));
            v.counters = Counters {
                wire_events,
                webrtc_offers,
                ..Counters::default()
            };
            Rc::new(v)
        };
        let parts = Parts::new(&with(10, 1));
        let busier = parts.next(&with(500, 1));
        assert_eq!(busier.upgrades, parts.upgrades, "wire events are not shown");
        let offered = busier.next(&with(510, 2));
        assert_ne!(offered.upgrades, busier.upgrades);
        assert_eq!(offered.upgrades.webrtc_offers, 2);
    }

    #[wasm_bindgen_test]
    fn parts_read_from_different_views_differ_even_at_the_same_version() {
        let a = Parts::new(&view(1_000, Vec::new()));
        let b = Parts::new(&view(1_000, Vec::new()));
        assert_eq!(a.peers.version, b.peers.version);
        assert_ne!(a.peers, b.peers);
    }
}
