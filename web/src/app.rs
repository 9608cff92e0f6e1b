//! The page: header, relay banner, the GIMPS panels, the DHT panel (full width), and the Peers
//! and Event log panels, with loading and error states.

use yew::prelude::*;

use crate::components::{
    DhtPanel, EventLog, GimpsLog, GimpsPanel, Header, PeersPanel, RelayBanner,
};
use crate::runtime;
use crate::state::{Action, AppState};

/// The root component.
#[function_component(App)]
pub(crate) fn app() -> Html {
    let state = use_reducer(AppState::default);
    {
        let dispatcher = state.dispatcher();
        use_effect_with((), move |()| {
            let on_view = {
                let dispatcher = dispatcher.clone();
                move |view| dispatcher.dispatch(Action::View(view))
            };
            if let Err(error) = runtime::start(on_view) {
                dispatcher.dispatch(Action::Fatal(error));
            }
        });
    }

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
                <RelayBanner relay={view.relay.clone()} />
                <main>
                    if let Some(gimps) = &view.gimps {
                        <div class="panels gimps">
                            <GimpsPanel gimps={gimps.clone()} name={view.name.clone()} peer_id={view.peer_id.clone()} />
                            <GimpsLog gimps={gimps.clone()} />
                        </div>
                    }
                    <div class="panels full">
                        <DhtPanel dht={view.dht.clone()} relay={view.relay.peer_id.clone()} />
                    </div>
                    <div class="panels">
                        <PeersPanel peers={view.peers.clone()} />
                        <EventLog events={view.wire.clone()} />
                    </div>
                </main>
            </>
        },
    };

    html! {
        <div class="app">
            <Header view={state.view.clone()} />
            { body }
            <footer>
                { format!("tabmesh {} · each tab is a libp2p peer · ", env!("CARGO_PKG_VERSION")) }
                <a href="/api/bootstrap">{ "bootstrap" }</a>
                { " · " }
                <a href="/metrics">{ "relay metrics" }</a>
            </footer>
        </div>
    }
}
