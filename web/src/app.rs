//! The page: header, relay banner, the GIMPS panels, the Services, Tracing, Snapshot and DHT panels (full
//! width), and the Peers and Event log panels, with loading and error states. The root's
//! `data-view-ms` is the `now_ms` of the view the page shows.

use yew::prelude::*;

use crate::components::{
    DhtPanel, EventLog, GimpsLog, GimpsPanel, Header, PeersPanel, RelayBanner, ServicesPanel,
    SnapshotPanel, TracingPanel,
};
use crate::node_client::{NodeClient, Update};
use crate::state::{Action, AppState};

/// Properties of [`App`]: the client of this tab's node.
#[derive(Properties, PartialEq)]
pub(crate) struct AppProps {
    /// The node's client.
    pub(crate) client: NodeClient,
}

/// What components need to act: the node's client and the reducer's dispatcher.
#[derive(Clone, PartialEq)]
pub(crate) struct Ui {
    /// Commands and requests to the node.
    pub(crate) client: NodeClient,
    /// Answers to the page's requests go here.
    pub(crate) dispatch: UseReducerDispatcher<AppState>,
}

/// The root component.
#[function_component(App)]
pub(crate) fn app(props: &AppProps) -> Html {
    crate::renders::count("app");
    let state = use_reducer(AppState::default);
    {
        let dispatcher = state.dispatcher();
        let client = props.client.clone();
        use_effect_with((), move |()| {
            client.on_update(Callback::from(move |update| {
                dispatcher.dispatch(match update {
                    Update::View(view) => Action::View(view),
                    Update::Fatal(error) => Action::Fatal(error),
                });
            }));
        });
    }
    let ui = Ui {
        client: props.client.clone(),
        dispatch: state.dispatcher(),
    };

    let body = match (&state.view, &state.fatal) {
        (_, Some(error)) => html! {
            <div class="banner error" role="alert">
                <strong>{ "The node could not start. " }</strong>{ error }
            </div>
        },
        (None, None) => html! {
            <div class="loading" aria-busy="true">
                <div class="spinner"></div>
                <p>{ "Starting the node…" }</p>
            </div>
        },
        (Some(view), None) => html! {
            <>
                <RelayBanner relay={view.relay.clone()} direct={view.direct_peers()} />
                <main>
                    if let Some(gimps) = &view.gimps {
                        <div class="panels gimps">
                            <GimpsPanel gimps={gimps.clone()} name={view.name.clone()} peer_id={view.peer_id.clone()} />
                            <GimpsLog gimps={gimps.clone()} />
                        </div>
                    }
                    <div class="panels full">
                        <ServicesPanel services={view.services.clone()} me={view.peer_id.clone()} peers={view.peers.clone()}
                            catalog={state.catalog.clone()} call={state.call.clone()}
                            note={state.offer_note.clone()} />
                    </div>
                    <div class="panels full">
                        <TracingPanel section={view.trace.clone()} me={view.peer_id.clone()}
                            trace={state.trace.clone()} ping_note={state.ping_note.clone()} />
                    </div>
                    <div class="panels full">
                        <SnapshotPanel section={view.snapshot.clone()} me={view.peer_id.clone()} />
                    </div>
                    <div class="panels full">
                        <DhtPanel dht={view.dht.clone()} relay={view.relay.peer_id.clone()}
                            request={state.dht_request.clone()} />
                    </div>
                    <div class="panels">
                        <PeersPanel peers={view.peers.clone()} banned={view.banned.clone()} />
                        <EventLog events={view.wire.clone()} />
                    </div>
                </main>
            </>
        },
    };

    let page = html! {
        <>
            <Header view={state.view.clone()} />
            { body }
            <footer>
                { format!("tabmesh {} · each tab is a libp2p peer · ", env!("CARGO_PKG_VERSION")) }
                <a href="/api/bootstrap">{ "bootstrap" }</a>
                { " · " }
                <a href="/metrics">{ "relay metrics" }</a>
            </footer>
        </>
    };
    html! {
        <div class="app" data-view-ms={state.view.as_ref().map(|v| v.now_ms.to_string())}>
            <ContextProvider<Ui> context={ui}>{ page }</ContextProvider<Ui>>
        </div>
    }
}
