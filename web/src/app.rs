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

    let body = match (&state.view, &state.parts, &state.fatal) {
        (_, _, Some(error)) => html! {
            <div class="banner error" role="alert">
                <strong>{ "The node could not start. " }</strong>{ error }
            </div>
        },
        (Some(view), Some(parts), None) => {
            let me = AttrValue::from(view.peer_id.clone());
            html! {
                <>
                    <RelayBanner relay={parts.relay.clone()} direct={view.direct_peers()} />
                    <main>
                        if view.gimps.is_some() {
                            <div class="panels gimps">
                                <GimpsPanel gimps={parts.gimps.clone()} name={view.name.clone()} peer_id={me.clone()} />
                                <GimpsLog log={parts.gimps_log.clone()} />
                            </div>
                        }
                        <div class="panels full">
                            <ServicesPanel services={parts.services.clone()} me={me.clone()} peers={parts.peer_links.clone()}
                                catalog={state.catalog.clone()} call={state.call.clone()}
                                note={state.offer_note.clone()} />
                        </div>
                        <div class="panels full">
                            <TracingPanel section={parts.trace.clone()} me={me.clone()}
                                trace={state.trace.clone()} ping_note={state.ping_note.clone()} />
                        </div>
                        <div class="panels full">
                            <SnapshotPanel section={parts.snapshot.clone()} me={me.clone()} />
                        </div>
                        <div class="panels full">
                            <DhtPanel dht={parts.dht.clone()} relay={view.relay.peer_id.clone()}
                                request={state.dht_request.clone()} />
                        </div>
                        <div class="panels">
                            <PeersPanel peers={parts.peers.clone()} banned={parts.banned.clone()}
                                upgrades={parts.upgrades.clone()} />
                            <EventLog events={parts.wire.clone()} kept={view.wire_kept} />
                        </div>
                    </main>
                </>
            }
        }
        _ => html! {
            <div class="loading" aria-busy="true">
                <div class="spinner"></div>
                <p>{ "Starting the node…" }</p>
            </div>
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
