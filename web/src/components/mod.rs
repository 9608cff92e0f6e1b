//! One component per panel, plus the copy button they share.

mod dht;
mod event_log;
mod gimps;
mod header;
mod peers;
mod services;
mod snapshot;
mod tracing;

pub(crate) use dht::{DhtPanel, same_dht};
pub(crate) use event_log::EventLog;
pub(crate) use gimps::{GimpsLog, GimpsPanel};
pub(crate) use header::{Header, RelayBanner};
pub(crate) use peers::PeersPanel;
pub(crate) use services::ServicesPanel;
pub(crate) use snapshot::SnapshotPanel;
pub(crate) use tracing::TracingPanel;

use std::future::Future;
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use gloo_timers::callback::Timeout;
use yew::prelude::*;

/// Where a [`CopyButton`] gets the text it copies when that is only known at the click (the
/// node's whole Event log, say): `Err` says why there is none.
#[derive(Clone)]
pub(crate) struct TextSource(Rc<dyn Fn() -> LocalBoxFuture<'static, Result<String, String>>>);

impl TextSource {
    pub(crate) fn new<F>(fetch: impl Fn() -> F + 'static) -> Self
    where
        F: Future<Output = Result<String, String>> + 'static,
    {
        Self(Rc::new(move || Box::pin(fetch())))
    }
}

impl PartialEq for TextSource {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// Properties of [`CopyButton`].
#[derive(Properties, PartialEq)]
pub(crate) struct CopyButtonProps {
    /// The text to copy (or, with `source`, what to copy if the source has none).
    pub(crate) text: AttrValue,
    /// Asked for the text at the click, instead of `text`.
    #[prop_or_default]
    pub(crate) source: Option<TextSource>,
    /// Button label.
    #[prop_or(AttrValue::Static("Copy"))]
    pub(crate) label: AttrValue,
    /// Accessible description.
    #[prop_or_default]
    pub(crate) title: AttrValue,
}

/// A button that copies `text` to the clipboard and says so for a moment.
#[function_component(CopyButton)]
pub(crate) fn copy_button(props: &CopyButtonProps) -> Html {
    let copied = use_state(|| None::<bool>);
    let onclick = {
        let text = props.text.clone();
        let source = props.source.clone();
        let copied = copied.clone();
        Callback::from(move |_: MouseEvent| {
            let Some(window) = web_sys::window() else {
                return;
            };
            let (text, source, copied) = (text.clone(), source.clone(), copied.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let text = match source {
                    Some(TextSource(fetch)) => fetch().await.unwrap_or_else(|why| {
                        ::tracing::warn!(%why, "copying what the page shows instead");
                        text.to_string()
                    }),
                    None => text.to_string(),
                };
                let promise = window.navigator().clipboard().write_text(&text);
                let ok = wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
                copied.set(Some(ok));
                let reset = copied.clone();
                Timeout::new(1500, move || reset.set(None)).forget();
            });
        })
    };
    let label = match *copied {
        Some(true) => AttrValue::Static("Copied"),
        Some(false) => AttrValue::Static("Copy failed"),
        None => props.label.clone(),
    };
    html! {
        <button class="copy" type="button" title={props.title.clone()} {onclick}>{ label }</button>
    }
}

/// "1.2 s ago", "3 min ago".
pub(crate) fn ago(ms: u64) -> String {
    match ms {
        0..=999 => "just now".to_owned(),
        1_000..=59_999 => format!("{} s ago", ms / 1000),
        _ => format!("{} min ago", ms / 60_000),
    }
}
