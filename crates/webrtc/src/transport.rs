//! The libp2p `Transport` for `/webrtc` (browser to browser, signaled over the relay).
//!
//! - **Listening** on `<relay address>/p2p-circuit/webrtc` (or plain `/webrtc`) makes the
//!   address known; connections arrive as `/webrtc-signaling/0.0.1` streams that peers open on
//!   their (relayed) connection to us. Each becomes an incoming connection whose upgrade answers
//!   the offer. The address must be reachable through a relay reservation the node holds.
//! - **Dialing** `<relay address>/p2p-circuit/webrtc/p2p/<peer>` opens a signaling stream to the
//!   peer (over the connection the swarm has, or a new relay circuit), sends an offer, and ends
//!   with a direct `RTCPeerConnection` carrying the libp2p connection.
//!
//! There is no security handshake and no muxer negotiation on top: the peer connection's DTLS
//! fingerprints travelled inside the SDPs on an authenticated libp2p connection, so the peer's
//! identity is the one of the connection the signaling came on; every data channel is a
//! stream (see [`muxer`](crate::muxer)). This is what the libp2p specification prescribes and
//! what js-libp2p does.
//!
//! Put this transport before the relay client's: the relay client accepts any address with
//! `/p2p-circuit` in it and would turn a `/webrtc` dial into a plain relayed connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use send_wrapper::SendWrapper;

use crate::IceServer;
use crate::addr::{is_listen_addr, parse_dial_addr};
use crate::behaviour::{InboundSignaling, SignalingStreams, StreamError, ViolationReporter};
use crate::browser::{PeerConnection, negotiate};
use crate::muxer::Connection;
use crate::signaling::{DEFAULT_TIMEOUT, Role, SignalingError};

/// Incoming connections being set up at once, at most (each holds a browser peer connection).
const MAX_INBOUND_UPGRADES: usize = 8;
/// How long the dialer waits for its `init` channel to open before closing it anyway.
const INIT_CHANNEL_WAIT: Duration = Duration::from_secs(5);

/// Settings of the transport, shared with the node (ICE servers arrive with the bootstrap
/// document, after the swarm exists).
#[derive(Debug, Clone)]
pub struct Config {
    ice_servers: Arc<Mutex<Vec<IceServer>>>,
    /// Longest signaling exchange (offer to connected), each side.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ice_servers: Arc::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Config {
    /// STUN/TURN servers for new peer connections (none on loopback or a LAN).
    pub fn set_ice_servers(&self, list: Vec<IceServer>) {
        if let Ok(mut servers) = self.ice_servers.lock() {
            *servers = list;
        }
    }

    fn ice_servers(&self) -> Vec<IceServer> {
        self.ice_servers
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// Why a WebRTC connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No signaling stream to the peer.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The signaling exchange failed.
    #[error("WebRTC signaling failed: {0}")]
    Signaling(#[from] SignalingError),
    /// The browser refused something.
    #[error("browser: {0}")]
    Browser(String),
}

type Output = (PeerId, Connection);
type Upgrade = SendWrapper<LocalBoxFuture<'static, Result<Output, Error>>>;

/// The `/webrtc` transport. Create it with [`crate::new`], together with its behaviour.
pub struct Transport {
    config: Config,
    streams: SignalingStreams,
    listeners: Vec<(ListenerId, Multiaddr)>,
    events: VecDeque<TransportEvent<Upgrade, Error>>,
    inbound_upgrades: Arc<()>,
}

impl Transport {
    pub(crate) fn new(config: Config, streams: SignalingStreams) -> Self {
        Self {
            config,
            streams,
            listeners: Vec::new(),
            events: VecDeque::new(),
            inbound_upgrades: Arc::new(()),
        }
    }

    fn on_inbound(&mut self, inbound: InboundSignaling) -> Option<TransportEvent<Upgrade, Error>> {
        let InboundSignaling { peer, stream } = inbound;
        let Some((listener_id, local_addr)) = self.listeners.first().cloned() else {
            tracing::info!(%peer, "WebRTC offer refused: not listening on /webrtc");
            return None;
        };
        // Each running upgrade holds a clone; the count bounds live peer connections.
        if Arc::strong_count(&self.inbound_upgrades) > MAX_INBOUND_UPGRADES {
            tracing::warn!(%peer, "WebRTC offer refused: {MAX_INBOUND_UPGRADES} already being answered");
            return None;
        }
        let slot = self.inbound_upgrades.clone();
        let ice = self.config.ice_servers();
        let timeout = self.config.timeout;
        let reporter = self.streams.reporter();
        let upgrade = async move {
            let _slot = slot;
            let connection = connect(Role::Listener, &ice, timeout, stream)
                .await
                .inspect_err(|e| report_violation(&reporter, peer, e))?;
            Ok((peer, connection))
        };
        Some(TransportEvent::Incoming {
            listener_id,
            upgrade: SendWrapper::new(upgrade.boxed_local()),
            local_addr,
            send_back_addr: Multiaddr::empty()
                .with(Protocol::WebRTC)
                .with(Protocol::P2p(peer)),
        })
    }
}

impl libp2p::core::Transport for Transport {
    type Output = Output;
    type Error = Error;
    type ListenerUpgrade = Upgrade;
    type Dial = Upgrade;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Error>> {
        if !is_listen_addr(&addr) {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.listeners.push((id, addr.clone()));
        self.events.push_back(TransportEvent::NewAddress {
            listener_id: id,
            listen_addr: addr,
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let before = self.listeners.len();
        self.listeners.retain(|(l, _)| *l != id);
        let removed = self.listeners.len() != before;
        if removed {
            self.events.push_back(TransportEvent::ListenerClosed {
                listener_id: id,
                reason: Ok(()),
            });
        }
        removed
    }

    fn dial(&mut self, addr: Multiaddr, _opts: DialOpts) -> Result<Upgrade, TransportError<Error>> {
        let Some((circuit_addr, peer)) = parse_dial_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let open = self.streams.open(peer, circuit_addr);
        let ice = self.config.ice_servers();
        let timeout = self.config.timeout;
        let reporter = self.streams.reporter();
        let dial = async move {
            let stream = open.await?;
            let connection = connect(Role::Dialer, &ice, timeout, stream)
                .await
                .inspect_err(|e| report_violation(&reporter, peer, e))?;
            Ok((peer, connection))
        };
        Ok(SendWrapper::new(dial.boxed_local()))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Upgrade, Error>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        while let Poll::Ready(Some(inbound)) = self.streams.inbound.poll_next_unpin(cx) {
            if let Some(event) = self.on_inbound(inbound) {
                return Poll::Ready(event);
            }
        }
        Poll::Pending
    }
}

/// Reports `peer` if the signaling failed because it broke the protocol.
fn report_violation(reporter: &ViolationReporter, peer: PeerId, error: &Error) {
    if let Error::Signaling(e) = error
        && e.is_violation()
    {
        reporter.report(peer, e.to_string());
    }
}

/// One side of the signaling over `stream`, then the connected peer connection as a muxer.
async fn connect(
    role: Role,
    ice_servers: &[IceServer],
    timeout: Duration,
    stream: libp2p::Stream,
) -> Result<Connection, Error> {
    // Created before the first message is read, so no early data channel of the peer is missed.
    let mut pc = PeerConnection::new(ice_servers).map_err(Error::Browser)?;
    let (mut reader, mut writer) = stream.split();
    let negotiated = {
        let outgoing = futures::sink::unfold(&mut writer, |writer, bytes: Vec<u8>| async move {
            writer.write_all(&bytes).await?;
            writer.flush().await?;
            Ok::<_, std::io::Error>(writer)
        });
        let incoming = futures::stream::unfold(&mut reader, |reader| async move {
            let mut buf = vec![0u8; 8192];
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((buf, reader))
                }
            }
        });
        let mut outgoing = std::pin::pin!(outgoing);
        let mut incoming = std::pin::pin!(incoming);
        negotiate(&mut pc, role, timeout, &mut outgoing, &mut incoming).await
    };
    // On failure the stream is dropped unclosed: the peer's read fails and it stops waiting.
    let (init, early) = negotiated?;
    // The signaling stream has done its job; closing our side tells the peer so.
    let _ = writer.close().await;
    if let Some(mut init) = init {
        // The dialer's `init` channel only gave the offer its data section: close it once open.
        let mut wait = futures_timer::Delay::new(INIT_CHANNEL_WAIT).fuse();
        futures::select! {
            _ = init.open().fuse() => {},
            () = wait => {},
        }
        init.channel.close();
    }
    Ok(Connection::new(pc, early))
}
