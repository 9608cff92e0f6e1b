//! The tab's side of its search worker (`crates/search-worker`, loaded from
//! `search/worker.js`): the Lucas-Lehmer test runs there, one slice per request, so the UI
//! thread never runs it and the tab's gossip, DHT and page stay responsive at any exponent.
//!
//! The worker is started on first use. If it cannot run (the script is missing, as under a
//! server that does not serve it; the browser refuses module workers; it failed or did not say
//! it was ready within [`READY_TIMEOUT`]), every request fails with the reason, the caller runs
//! the slice on the page instead, and [`place`] says so for the GIMPS panel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{Either, select};
use tabmesh_core::gimps::pace::SearchPlace;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

/// Where the worker's entry script is, relative to the page.
const WORKER_URL: &str = "search/worker.js";
/// How long the worker may take to load its module and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The worker's answer states (`tabmesh_search_worker`'s constants).
const RUNNING: u32 = 0;
const PRIME: u32 = 1;
const COMPOSITE: u32 = 2;

/// One slice's outcome.
pub(crate) struct Slice {
    /// The verdict, once the test is complete.
    pub(crate) verdict: Option<bool>,
    /// How long the worker computed.
    pub(crate) worked: Duration,
}

type Reply = oneshot::Sender<Result<Slice, String>>;

enum Link {
    NotStarted,
    Starting { waiting: Vec<oneshot::Sender<()>> },
    Ready,
    Failed(String),
}

struct State {
    link: Link,
    worker: Option<web_sys::Worker>,
    pending: HashMap<u32, Reply>,
    next_task: u32,
    /// The worker's event handlers, alive as long as it is.
    handlers: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        link: Link::NotStarted,
        worker: None,
        pending: HashMap::new(),
        next_task: 0,
        handlers: Vec::new(),
    });
}

/// Where tests run now.
pub(crate) fn place() -> SearchPlace {
    STATE.with(|s| match &s.borrow().link {
        Link::NotStarted => SearchPlace::Idle,
        Link::Starting { .. } => SearchPlace::Starting,
        Link::Ready => SearchPlace::Worker,
        Link::Failed(reason) => SearchPlace::Page(reason.clone()),
    })
}

/// A new task number: each test in progress is one task in the worker.
pub(crate) fn next_task() -> u32 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.next_task = s.next_task.wrapping_add(1);
        s.next_task
    })
}

/// Works on `task` (testing `2^p - 1`) in the worker for about `budget`; an error says why the
/// worker cannot (the caller then runs the slice itself).
pub(crate) async fn advance(task: u32, p: u32, budget: Duration) -> Result<Slice, String> {
    ready().await?;
    let (tx, rx) = oneshot::channel();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let worker = s.worker.clone().ok_or("the search worker is gone")?;
        let request: js_sys::Array = [f64::from(task), f64::from(p), budget.as_secs_f64() * 1e3]
            .iter()
            .map(|v| JsValue::from_f64(*v))
            .collect();
        worker
            .post_message(&request)
            .map_err(|e| format!("cannot post to the search worker: {e:?}"))?;
        s.pending.insert(task, tx);
        Ok::<_, String>(())
    })?;
    rx.await
        .map_err(|_| "the search worker stopped".to_owned())?
}

/// Waits until the worker is ready, starting it if need be.
async fn ready() -> Result<(), String> {
    let waiting = STATE.with(|s| {
        let mut s = s.borrow_mut();
        if matches!(s.link, Link::NotStarted) {
            start(&mut s);
        }
        match &mut s.link {
            Link::Ready => Ok(None),
            Link::Failed(reason) => Err(reason.clone()),
            Link::Starting { waiting } => {
                let (tx, rx) = oneshot::channel();
                waiting.push(tx);
                Ok(Some(rx))
            }
            Link::NotStarted => Err("the search worker did not start".to_owned()),
        }
    })?;
    let Some(waiting) = waiting else {
        return Ok(());
    };
    match select(waiting, futures_timer::Delay::new(READY_TIMEOUT)).await {
        Either::Left((Ok(()), _)) => Ok(()),
        Either::Left((Err(_), _)) => Err(STATE.with(|s| match &s.borrow().link {
            Link::Failed(reason) => reason.clone(),
            _ => "the search worker did not start".to_owned(),
        })),
        Either::Right(_) => {
            let reason = format!(
                "the search worker did not start within {} s",
                READY_TIMEOUT.as_secs()
            );
            fail(reason.clone());
            Err(reason)
        }
    }
}

fn start(s: &mut State) {
    let options = web_sys::WorkerOptions::new();
    options.set_type(web_sys::WorkerType::Module);
    let worker = match web_sys::Worker::new_with_options(WORKER_URL, &options) {
        Ok(worker) => worker,
        Err(e) => {
            s.link = Link::Failed(format!("cannot start the search worker: {e:?}"));
            return;
        }
    };
    let on_message = Closure::<dyn FnMut(web_sys::Event)>::new(|event: web_sys::Event| {
        if let Some(event) = event.dyn_ref::<web_sys::MessageEvent>() {
            on_message(event.data());
        }
    });
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(|event: web_sys::Event| {
        let detail = event
            .dyn_ref::<web_sys::ErrorEvent>()
            .map(|e| e.message())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("cannot load {WORKER_URL}"));
        fail(format!("search worker failed: {detail}"));
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    s.handlers = vec![on_message, on_error];
    s.worker = Some(worker);
    s.link = Link::Starting {
        waiting: Vec::new(),
    };
}

fn on_message(data: JsValue) {
    if let Some(text) = data.as_string() {
        if text == "ready" {
            STATE.with(|s| {
                let mut s = s.borrow_mut();
                if let Link::Starting { waiting } = std::mem::replace(&mut s.link, Link::Ready) {
                    for tx in waiting {
                        let _ = tx.send(());
                    }
                }
            });
        } else {
            fail(format!("search worker: {text}"));
        }
        return;
    }
    if !js_sys::Array::is_array(&data) {
        return;
    }
    let values: Vec<f64> = js_sys::Array::from(&data)
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    let [task, state, _done, worked] = values[..] else {
        return;
    };
    let Some(reply) = STATE.with(|s| s.borrow_mut().pending.remove(&(task as u32))) else {
        return;
    };
    let worked = Duration::from_secs_f64(worked.clamp(0.0, 1e9) / 1e3);
    let _ = reply.send(match state as u32 {
        RUNNING => Ok(Slice {
            verdict: None,
            worked,
        }),
        PRIME | COMPOSITE => Ok(Slice {
            verdict: Some(state as u32 == PRIME),
            worked,
        }),
        _ => Err("the search worker refused the request".to_owned()),
    });
}

/// The worker cannot be used: say why from now on, and let every waiting test go on without it.
fn fail(reason: String) {
    tracing::warn!(%reason, "Lucas-Lehmer search moves to the page");
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(worker) = s.worker.take() {
            worker.terminate();
        }
        // Dropping the senders wakes every waiter with an error.
        s.pending.clear();
        s.link = Link::Failed(reason);
    });
}
