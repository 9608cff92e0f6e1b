//! UI state: a Yew reducer fed by the node's views.

use std::rc::Rc;

use tabmesh_node::NodeView;
use yew::Reducible;

/// What the UI knows.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AppState {
    /// The latest view of our node; `None` while it starts.
    pub(crate) view: Option<Rc<NodeView>>,
    /// Why the node could not start, if it could not.
    pub(crate) fatal: Option<String>,
}

/// Changes to the UI state.
pub(crate) enum Action {
    /// The node published a new view.
    View(Rc<NodeView>),
    /// The node failed to start.
    Fatal(String),
}

impl Reducible for AppState {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        match action {
            Action::View(view) => Rc::new(Self {
                view: Some(view),
                fatal: self.fatal.clone(),
            }),
            Action::Fatal(error) => Rc::new(Self {
                view: self.view.clone(),
                fatal: Some(error),
            }),
        }
    }
}
