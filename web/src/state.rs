//! UI state: one Yew reducer, fed by the node's views and by the answers to the page's requests.
//!
//! Everything the page shows comes from here: components dispatch [`Action`]s and never keep
//! node state of their own; commands leave through the [`NodeClient`](crate::node_client).

use std::rc::Rc;

use tabmesh_core::dht::DhtReply;
use tabmesh_core::services::Catalog;
use tabmesh_core::trace::assemble::Trace;
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

/// What the UI knows.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AppState {
    /// The latest view of our node; `None` while it starts.
    pub(crate) view: Option<Rc<NodeView>>,
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
            fatal: self.fatal.clone(),
            dht_request: self.dht_request.clone(),
            call: self.call.clone(),
            catalog: self.catalog.clone(),
            offer_note: self.offer_note.clone(),
            trace: self.trace.clone(),
            ping_note: self.ping_note.clone(),
        };
        match action {
            Action::View(view) => next.view = Some(view),
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
