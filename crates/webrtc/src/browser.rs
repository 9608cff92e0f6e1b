//! The browser side: an `RTCPeerConnection` driven by the [`signaling`](crate::signaling) state
//! machine, and data channels whose messages are never lost.
//!
//! [`PeerConnection`] owns the browser object and turns its callbacks (ICE candidates,
//! connection state, incoming data channels) into a stream of [`PcEvent`]s. A data channel's
//! `message` handler is attached inside the browser callback that announces the channel, before
//! any message can be dispatched, because a browser drops messages that arrive while no handler
//! is set. Dropping a [`PeerConnection`] closes the browser object (Chromium limits live peer
//! connections per page).
//!
//! [`negotiate`] runs one side of `/webrtc-signaling/0.0.1` over any byte pipe (a libp2p stream
//! on the relayed connection in the transport, an in-page pipe in the tests).

use std::collections::VecDeque;

use futures::channel::mpsc;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use js_sys::{Array, JSON, Reflect, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcConfiguration, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelType,
    RtcIceCandidateInit, RtcIceServer, RtcPeerConnection, RtcPeerConnectionIceEvent,
    RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
};
use web_time::Instant;

use crate::signaling::{
    Role, SdpKind, SignalingAction, SignalingDecoder, SignalingError, SignalingSession,
};

/// What the browser reports about a peer connection.
#[derive(Debug)]
pub enum PcEvent {
    /// A local ICE candidate (`RTCIceCandidate.toJSON()` as JSON); `None` when gathering ends.
    IceCandidate(Option<String>),
    /// The connection state changed (`new`, `connecting`, `connected`, `disconnected`,
    /// `failed`, `closed`).
    State(RtcPeerConnectionState),
    /// The peer opened a data channel.
    DataChannel(DataChannel),
}

/// A data channel with its incoming messages.
#[derive(Debug)]
pub struct DataChannel {
    /// The browser object.
    pub channel: RtcDataChannel,
    /// Its messages, in order (ends when the channel closes).
    pub messages: mpsc::UnboundedReceiver<Vec<u8>>,
    opened: Option<futures::channel::oneshot::Receiver<bool>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
    _on_open: Closure<dyn FnMut(JsValue)>,
}

impl DataChannel {
    /// Wraps `channel`, attaching its handlers at once.
    pub fn new(channel: RtcDataChannel) -> Self {
        channel.set_binary_type(RtcDataChannelType::Arraybuffer);
        // Unbounded: a data channel has no read back-pressure in the browser; the stream on top
        // bounds what it buffers and resets a peer that floods it.
        let (tx, messages) = mpsc::unbounded();
        let message_tx = tx.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let bytes = if let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() {
                Uint8Array::new(buffer).to_vec()
            } else if let Some(text) = data.as_string() {
                text.into_bytes()
            } else {
                return;
            };
            let _ = message_tx.unbounded_send(bytes);
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // Opening ends with `open` (true) or with `close` before it (false).
        let (open_tx, opened) = futures::channel::oneshot::channel();
        let open_tx = std::rc::Rc::new(std::cell::RefCell::new(Some(open_tx)));
        let close_open_tx = open_tx.clone();
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            tx.close_channel();
            if let Some(waiting) = close_open_tx.borrow_mut().take() {
                let _ = waiting.send(false);
            }
        });
        channel.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(waiting) = open_tx.borrow_mut().take() {
                let _ = waiting.send(true);
            }
        });
        channel.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        Self {
            channel,
            messages,
            opened: Some(opened),
            _on_message: on_message,
            _on_close: on_close,
            _on_open: on_open,
        }
    }

    /// Resolves once the channel is open; `false` if it closed first.
    pub async fn open(&mut self) -> bool {
        futures::future::poll_fn(|cx| self.poll_open(cx)).await
    }

    /// [`open`](Self::open) as a poll.
    pub fn poll_open(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        use std::task::Poll;
        let is_open = |c: &RtcDataChannel| c.ready_state() == web_sys::RtcDataChannelState::Open;
        if is_open(&self.channel) {
            return Poll::Ready(true);
        }
        match self.opened.as_mut() {
            Some(opened) => match opened.poll_unpin(cx) {
                Poll::Ready(result) => {
                    self.opened = None;
                    Poll::Ready(result.unwrap_or(false) || is_open(&self.channel))
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Ready(false),
        }
    }

    /// Sends one message.
    pub fn send(&self, bytes: &[u8]) -> Result<(), String> {
        self.channel
            .send_with_u8_array(bytes)
            .map_err(|e| js_text(&e))
    }
}

impl Drop for DataChannel {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.set_onclose(None);
        self.channel.set_onopen(None);
    }
}

/// An `RTCPeerConnection` and its events.
pub struct PeerConnection {
    pc: RtcPeerConnection,
    /// What the browser reports.
    pub events: mpsc::UnboundedReceiver<PcEvent>,
    events_tx: mpsc::UnboundedSender<PcEvent>,
    /// The SCTP transport watched by [`watch_transport`](Self::watch_transport), if any.
    sctp: Option<JsValue>,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

thread_local! {
    /// Every peer connection of this page that is not closed yet, for [`close_all`].
    static LIVE: std::cell::RefCell<Vec<RtcPeerConnection>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Closes every peer connection of this page at once. Call it when the page goes away
/// (`pagehide`): a browser tearing a page down does not always close its peer connections
/// itself, and its peers would then notice only when ICE consent checks fail (about 15 s
/// later, measured in headless Chromium). Closed here, the SCTP association ends with an
/// abort the peers see at once ([`PeerConnection::watch_transport`]).
pub fn close_all() {
    let live = LIVE.with(|live| std::mem::take(&mut *live.borrow_mut()));
    for pc in live {
        pc.close();
    }
}

impl PeerConnection {
    /// A peer connection using these STUN/TURN servers (none on loopback or a LAN).
    pub fn new(ice_servers: &[crate::IceServer]) -> Result<Self, String> {
        let config = RtcConfiguration::new();
        let servers = Array::new();
        for ice in ice_servers {
            let server = RtcIceServer::new();
            server.set_urls(&JsValue::from_str(&ice.urls));
            if let Some(username) = &ice.username {
                server.set_username(username);
            }
            if let Some(credential) = &ice.credential {
                server.set_credential(credential);
            }
            servers.push(&server);
        }
        config.set_ice_servers(&servers);
        let pc = RtcPeerConnection::new_with_configuration(&config).map_err(|e| js_text(&e))?;
        // Unbounded: the browser emits a handful of these per connection.
        let (tx, events) = mpsc::unbounded();
        let events_tx = tx.clone();
        let candidate_tx = tx.clone();
        let on_candidate = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let event: RtcPeerConnectionIceEvent = event.unchecked_into();
            let json = event
                .candidate()
                .and_then(|c| JSON::stringify(&c.to_json()).ok())
                .and_then(|s| s.as_string());
            let _ = candidate_tx.unbounded_send(PcEvent::IceCandidate(json));
        });
        pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
        let state_tx = tx.clone();
        let state_pc = pc.clone();
        let on_state = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let _ = state_tx.unbounded_send(PcEvent::State(state_pc.connection_state()));
        });
        pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        let on_channel = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let event: RtcDataChannelEvent = event.unchecked_into();
            // Handlers go on before this callback returns: no message is lost.
            let _ = tx.unbounded_send(PcEvent::DataChannel(DataChannel::new(event.channel())));
        });
        pc.set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
        LIVE.with(|live| live.borrow_mut().push(pc.clone()));
        Ok(Self {
            pc,
            events,
            events_tx,
            sctp: None,
            _handlers: vec![on_candidate, on_state, on_channel],
        })
    }

    /// Reports the connection `closed` as soon as its SCTP association closes. When the peer
    /// closes its side (or its tab), the association ends at once, while the connection state
    /// only turns `failed` after ICE consent checks time out (many seconds later). Call once
    /// the connection is up (there is no SCTP transport before).
    pub fn watch_transport(&mut self) {
        let Ok(sctp) = Reflect::get(&self.pc, &"sctp".into()) else {
            return;
        };
        if sctp.is_null() || sctp.is_undefined() || self.sctp.is_some() {
            return;
        }
        let tx = self.events_tx.clone();
        let watched = sctp.clone();
        let on_state = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let state = Reflect::get(&watched, &"state".into())
                .ok()
                .and_then(|s| s.as_string());
            if state.as_deref() == Some("closed") {
                let _ = tx.unbounded_send(PcEvent::State(RtcPeerConnectionState::Closed));
            }
        });
        if Reflect::set(&sctp, &"onstatechange".into(), on_state.as_ref()).is_ok() {
            self._handlers.push(on_state);
            self.sctp = Some(sctp);
        }
    }

    /// The browser object.
    pub fn inner(&self) -> &RtcPeerConnection {
        &self.pc
    }

    /// Opens a data channel (in-band negotiated, ordered, reliable).
    pub fn open_channel(&self, label: &str) -> DataChannel {
        DataChannel::new(self.pc.create_data_channel(label))
    }

    async fn description(&self, promise: js_sys::Promise) -> Result<String, String> {
        let description = JsFuture::from(promise).await.map_err(|e| js_text(&e))?;
        Reflect::get(&description, &"sdp".into())
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| "the browser returned no SDP".to_owned())
    }

    async fn set_description(&self, local: bool, kind: SdpKind, sdp: &str) -> Result<(), String> {
        let init = RtcSessionDescriptionInit::new(match kind {
            SdpKind::Offer => RtcSdpType::Offer,
            SdpKind::Answer => RtcSdpType::Answer,
        });
        init.set_sdp(sdp);
        let promise = if local {
            self.pc.set_local_description(&init)
        } else {
            self.pc.set_remote_description(&init)
        };
        JsFuture::from(promise)
            .await
            .map(|_| ())
            .map_err(|e| js_text(&e))
    }

    async fn add_candidate(&self, json: &str) -> Result<(), String> {
        let init: RtcIceCandidateInit = JSON::parse(json)
            .map_err(|e| format!("candidate is not JSON: {}", js_text(&e)))?
            .unchecked_into();
        JsFuture::from(
            self.pc
                .add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)),
        )
        .await
        .map(|_| ())
        .map_err(|e| js_text(&e))
    }
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        if let Some(sctp) = &self.sctp {
            let _ = Reflect::set(sctp, &"onstatechange".into(), &JsValue::NULL);
        }
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ondatachannel(None);
        self.pc.close();
        let closed: &JsValue = &self.pc;
        LIVE.with(|live| {
            live.borrow_mut()
                .retain(|pc| !js_sys::Object::is(pc, closed))
        });
    }
}

/// Runs one side of the signaling exchange for `pc` over a byte pipe: `outgoing` takes
/// encoded messages, `incoming` yields what the peer wrote (ending when it closes its side).
/// The dialer opens the `init` data channel the spec needs for its offer; it is returned so the
/// caller can close it once the connection is up. Data channels the peer opens meanwhile are
/// returned too, in order.
pub async fn negotiate<Tx, Rx>(
    pc: &mut PeerConnection,
    role: Role,
    timeout: std::time::Duration,
    outgoing: &mut Tx,
    incoming: &mut Rx,
) -> Result<(Option<DataChannel>, Vec<DataChannel>), SignalingError>
where
    Tx: Sink<Vec<u8>> + Unpin,
    Rx: Stream<Item = Vec<u8>> + Unpin,
{
    let mut session = SignalingSession::new(role, Instant::now(), timeout);
    let mut decoder = SignalingDecoder::default();
    let mut pending: VecDeque<SignalingAction> = VecDeque::new();
    let mut early_channels = Vec::new();
    let mut incoming_open = true;
    let init = if role == Role::Dialer {
        let init = pc.open_channel("init");
        let offer = pc
            .description(pc.pc.create_offer())
            .await
            .map_err(SignalingError::Failed)?;
        pending.extend(session.on_local_offer(offer));
        Some(init)
    } else {
        None
    };
    loop {
        while let Some(action) = pending.pop_front() {
            match action {
                SignalingAction::Send(message) => {
                    if outgoing.send(message.encode()).await.is_err() {
                        pending
                            .extend(session.on_failed("cannot write the signaling stream".into()));
                    }
                }
                SignalingAction::SetLocalDescription(kind, sdp) => {
                    if let Err(e) = pc.set_description(true, kind, &sdp).await {
                        pending
                            .extend(session.on_failed(format!("local description refused: {e}")));
                    }
                }
                SignalingAction::SetRemoteDescription(kind, sdp) => {
                    if let Err(e) = pc.set_description(false, kind, &sdp).await {
                        pending
                            .extend(session.on_failed(format!("remote description refused: {e}")));
                    }
                }
                SignalingAction::CreateAnswer => {
                    match pc.description(pc.pc.create_answer()).await {
                        Ok(answer) => pending.extend(session.on_local_answer(answer)),
                        Err(e) => pending.extend(session.on_failed(format!("cannot answer: {e}"))),
                    }
                }
                SignalingAction::AddIceCandidate(json) => {
                    // A candidate the browser cannot use is not fatal: others may work.
                    if let Err(e) = pc.add_candidate(&json).await {
                        tracing::debug!(%e, "remote ICE candidate ignored");
                    }
                }
                SignalingAction::Connected => return Ok((init, early_channels)),
                SignalingAction::Fail(error) => return Err(error),
            }
        }
        let wait = session
            .poll_timeout()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let mut timer = futures_timer::Delay::new(wait).fuse();
        let mut next_bytes = if incoming_open {
            incoming.next().fuse()
        } else {
            futures::future::Fuse::terminated()
        };
        futures::select! {
            bytes = next_bytes => match bytes {
                Some(bytes) => match decoder.push(&bytes) {
                    Ok(messages) => {
                        for message in messages {
                            pending.extend(session.on_message(message));
                        }
                    }
                    Err(error) => pending.extend(session.on_malformed(error)),
                },
                None => {
                    incoming_open = false;
                    pending.extend(session.on_stream_closed());
                }
            },
            event = pc.events.next() => match event {
                Some(PcEvent::IceCandidate(candidate)) => {
                    pending.extend(session.on_local_candidate(candidate));
                }
                Some(PcEvent::State(RtcPeerConnectionState::Connected)) => {
                    pending.extend(session.on_connected());
                }
                Some(PcEvent::State(state @ (RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed))) => {
                    pending.extend(session.on_failed(format!("peer connection {state:?}").to_lowercase()));
                }
                Some(PcEvent::State(_)) => {}
                Some(PcEvent::DataChannel(channel)) => early_channels.push(channel),
                None => pending.extend(session.on_failed("peer connection gone".into())),
            },
            () = timer => pending.extend(session.on_timeout(Instant::now())),
        }
    }
}

fn js_text(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}
