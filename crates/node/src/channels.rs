//! Ordered channels between peers (`/tabmesh/channel/1.0.0`): the FIFO channels Chandy-Lamport
//! snapshots need, one per direction per pair of connected peers.
//!
//! A channel to a peer is one long-lived stream (`libp2p-stream`), opened when the first frame
//! goes to that peer. The sender writes the channel's epoch (8 bytes: when it opened the
//! channel, in milliseconds, and larger than any epoch it used before) and the number of the
//! first frame on this stream (8 bytes), then numbered, length-prefixed frames: the sequence number (8 bytes), the length (4 bytes, at most
//! [`MAX_FRAME`]), the bytes. The receiver first writes one byte, [`READY`], back: `libp2p-stream` hands inbound streams over through a one-slot queue and
//! drops a stream that arrives while the slot is taken (two peers opening their channels to
//! us at once), so the sender writes nothing before it knows the stream was taken, and opens
//! another one otherwise (a few times, backing off). The receiver then acknowledges each frame
//! (its sequence number, 8 bytes) and the sender keeps what is not acknowledged, to write it
//! again on the next stream if this one fails. When the stream fails (its connection
//! was replaced, relayed by direct) the writer opens a new one and goes on numbering; the
//! receiving side puts frames back in order across streams
//! ([`tabmesh_core::snapshot::channel::Inbox`]) and reports a break when order was lost (a frame
//! never came) so that a snapshot recording the channel ends incomplete instead of wrong. When
//! the last connection to a peer closes, both directions close ([`ChannelEvent::Closed`]).
//!
//! Whenever any connection to a peer closes, both sides renew their streams with that peer: the
//! writer opens a new stream and writes what is unacknowledged again, the reader drops its
//! streams. A stream does not say which connection it rides on, and a yamux stream whose
//! connection this node closed itself is never woken again (its pending read waits forever), so
//! waiting for the stream to fail is not enough: a relayed connection replaced by a direct one
//! would leave the channel stuck.
//!
//! An oversized frame is a violation (reported for the misbehaviour ledger) and ends the stream.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::future::{LocalBoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, SinkExt, StreamExt};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm};
use libp2p::{PeerId, StreamProtocol};
use tabmesh_core::snapshot::channel::{Break, Inbox, Outbox};
use tabmesh_core::wire_log::Topic;

use crate::forward::forward_to;
use crate::report::Report;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/tabmesh/channel/1.0.0");
/// Largest frame.
pub const MAX_FRAME: usize = 16 * 1024;
/// Frames queued per peer before sending waits; beyond, frames are dropped (and counted).
pub const QUEUE: usize = 1024;
/// Frames a receiver holds ahead of a missing one before it declares the order lost.
pub const MAX_EARLY: usize = 256;
/// The byte a receiver writes when it took a stream.
pub const READY: u8 = 0x52;
/// Attempts at opening a stream that the receiver takes (backing off from 20 ms to 640 ms)
/// before pausing.
const OPEN_ATTEMPTS: u32 = 6;
/// The pause after that, unless a new frame comes first.
const RETRY_PAUSE: web_time::Duration = web_time::Duration::from_secs(2);

/// What the channels report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A frame from `from`, in the order it was sent.
    Frame {
        /// The sender.
        from: PeerId,
        /// Its bytes.
        frame: Vec<u8>,
    },
    /// The channel from `from` lost its order (frames before this point never came).
    Broke {
        /// The sender.
        from: PeerId,
        /// What happened.
        why: Break,
    },
    /// Every connection to `peer` closed: both channels with it are gone.
    Closed(PeerId),
}

/// Counters of the channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// Frames queued for sending.
    pub sent: u64,
    /// Frames handed on in order.
    pub received: u64,
    /// Frames dropped: the peer's queue was full or the frame too large.
    pub dropped: u64,
    /// Breaks of order.
    pub breaks: u64,
}

struct Outgoing {
    numbering: Outbox,
    queue: mpsc::Sender<(u64, Vec<u8>)>,
}

/// Tells the stream tasks of a peer that a connection to it closed.
///
/// Each task holds the [`Closing`] of its peer for the stream it is using; it resolves (for
/// every holder at once) at the next connection close with that peer, to `true` when that was
/// the last connection.
#[derive(Default)]
struct Renewals {
    next: HashMap<PeerId, (oneshot::Sender<bool>, Closing)>,
}

/// Resolves when a connection to the peer closes: `true` when none is left.
type Closing = Shared<oneshot::Receiver<bool>>;

impl Renewals {
    fn next_close(&mut self, peer: PeerId) -> Closing {
        let (_, closing) = self.next.entry(peer).or_insert_with(|| {
            let (tx, rx) = oneshot::channel();
            (tx, rx.shared())
        });
        closing.clone()
    }

    fn closed(&mut self, peer: PeerId, last: bool) {
        if let Some((tx, _)) = self.next.remove(&peer) {
            let _ = tx.send(last);
        }
    }
}

/// Waits for `closing`; `true` when the peer is gone.
async fn peer_gone(closing: Closing) -> bool {
    // A dropped sender (the behaviour went away) ends the task too.
    closing.await.unwrap_or(true)
}

/// What a reader task hands back: a numbered frame, or a violation.
enum Arrived {
    /// A stream from a peer begins: its epoch, its first frame.
    Stream(PeerId, u64, u64),
    /// From a peer: the epoch, the sequence number, the bytes.
    Frame(PeerId, u64, u64, Vec<u8>),
    Violation(PeerId, String),
}

/// The ordered channels of a node.
pub struct Behaviour {
    streams: libp2p_stream::Behaviour,
    control: libp2p_stream::Control,
    incoming: libp2p_stream::IncomingStreams,
    outgoing: HashMap<PeerId, Outgoing>,
    inboxes: HashMap<PeerId, Inbox<Vec<u8>>>,
    arrived_tx: mpsc::UnboundedSender<Arrived>,
    arrived: mpsc::UnboundedReceiver<Arrived>,
    tasks: FuturesUnordered<LocalBoxFuture<'static, ()>>,
    renewals: Rc<RefCell<Renewals>>,
    last_epoch: u64,
    events: VecDeque<ChannelEvent>,
    reports: VecDeque<Report>,
    counters: ChannelCounters,
}

impl Behaviour {
    /// Channels that accept `/tabmesh/channel/1.0.0` streams.
    pub fn new() -> Result<Self, crate::NodeError> {
        let streams = libp2p_stream::Behaviour::new();
        let mut control = streams.new_control();
        let incoming = control
            .accept(PROTOCOL)
            .map_err(|e| crate::NodeError::Transport(e.to_string()))?;
        let (arrived_tx, arrived) = mpsc::unbounded();
        Ok(Self {
            streams,
            control,
            incoming,
            outgoing: HashMap::new(),
            inboxes: HashMap::new(),
            arrived_tx,
            arrived,
            tasks: FuturesUnordered::new(),
            renewals: Rc::default(),
            last_epoch: 0,
            events: VecDeque::new(),
            reports: VecDeque::new(),
            counters: ChannelCounters::default(),
        })
    }

    /// The counters.
    pub fn counters(&self) -> ChannelCounters {
        self.counters
    }

    /// Queues `frame` on the channel to `to` (never waits: a full queue or an oversized frame
    /// drops it and says so).
    pub fn send(&mut self, to: PeerId, frame: Vec<u8>) -> Result<(), String> {
        if frame.len() > MAX_FRAME {
            self.counters.dropped += 1;
            return Err(format!(
                "a frame of {} bytes; at most {MAX_FRAME}",
                frame.len()
            ));
        }
        let outgoing = match self.outgoing.get_mut(&to) {
            Some(outgoing) => outgoing,
            None => {
                let (queue, frames) = mpsc::channel(QUEUE);
                let now = web_time::SystemTime::now()
                    .duration_since(web_time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                self.last_epoch = now.max(self.last_epoch + 1);
                let numbering = Outbox::new(self.last_epoch);
                let renewals = self.renewals.clone();
                let writer = write(
                    self.control.clone(),
                    to,
                    numbering.epoch(),
                    frames,
                    renewals,
                );
                self.tasks.push(writer.boxed_local());
                self.outgoing
                    .entry(to)
                    .or_insert(Outgoing { numbering, queue })
            }
        };
        let seq = outgoing.numbering.stamp();
        match outgoing.queue.try_send((seq, frame)) {
            Ok(()) => {
                self.counters.sent += 1;
                Ok(())
            }
            Err(_) => {
                self.counters.dropped += 1;
                Err(format!(
                    "the channel to {to} is full ({QUEUE} frames waiting)"
                ))
            }
        }
    }

    fn broke(&mut self, from: PeerId, why: Break) {
        self.counters.breaks += 1;
        self.events.push_back(ChannelEvent::Broke { from, why });
    }

    fn on_arrived(&mut self, arrived: Arrived) {
        match arrived {
            Arrived::Stream(from, epoch, first) => {
                let inbox = self
                    .inboxes
                    .entry(from)
                    .or_insert_with(|| Inbox::new(MAX_EARLY));
                if let Some(why) = inbox.begin(epoch, first) {
                    self.broke(from, why);
                }
            }
            Arrived::Frame(from, epoch, seq, frame) => {
                let inbox = self
                    .inboxes
                    .entry(from)
                    .or_insert_with(|| Inbox::new(MAX_EARLY));
                let (frames, broke) = inbox.accept(epoch, seq, frame);
                if let Some(why) = broke {
                    self.broke(from, why);
                }
                for frame in frames {
                    self.counters.received += 1;
                    self.events.push_back(ChannelEvent::Frame { from, frame });
                }
            }
            Arrived::Violation(peer, reason) => self.reports.push_back(Report::Misbehaved {
                peer,
                topic: Topic::Snapshot,
                reason,
            }),
        }
    }
}

/// Writes the frames queued for `to`, opening a stream (again, after a failure) as needed.
///
/// Every frame is kept until the receiver acknowledges it; when a stream fails, or a connection
/// to `to` closes (see the module's notes), the frames not acknowledged are written again, first,
/// on the next stream, and the receiver drops those it already had. So a channel loses nothing
/// while its peer stays connected; only when more than [`QUEUE`] frames wait unacknowledged are
/// the oldest given up (the receiver then sees a gap).
async fn write(
    mut control: libp2p_stream::Control,
    to: PeerId,
    epoch: u64,
    frames: mpsc::Receiver<(u64, Vec<u8>)>,
    renewals: Rc<RefCell<Renewals>>,
) {
    let mut frames = frames.fuse();
    let mut unacked = Unacked::default();
    loop {
        if unacked.0.is_empty() {
            match frames.next().await {
                Some(frame) => unacked.keep(frame),
                None => return,
            }
        }
        let closing = renewals.borrow_mut().next_close(to);
        let outcome = {
            let attempt = async {
                match open(&mut control, to).await {
                    Some(stream) => session(stream, epoch, &mut frames, &mut unacked).await,
                    None => Session::Unreachable,
                }
            }
            .fuse();
            futures::pin_mut!(attempt);
            let mut closing = peer_gone(closing).boxed_local().fuse();
            futures::select! {
                outcome = attempt => outcome,
                gone = closing => if gone { Session::Ended } else { Session::Broke },
            }
        };
        match outcome {
            Session::Ended => return,
            Session::Broke => {}
            Session::Unreachable => {
                // Try again with the next frame, or in a while.
                let mut pause = futures_timer::Delay::new(RETRY_PAUSE).fuse();
                futures::select! {
                    frame = frames.next() => match frame {
                        Some(frame) => unacked.keep(frame),
                        None => return,
                    },
                    () = pause => {}
                }
            }
        }
    }
}

/// How one stream of a channel ended.
enum Session {
    /// No stream could be opened.
    Unreachable,
    /// The stream failed or must be renewed: open another one.
    Broke,
    /// The channel is closed.
    Ended,
}

/// Frames written but not yet acknowledged, oldest first.
#[derive(Default)]
struct Unacked(VecDeque<(u64, Vec<u8>)>);

impl Unacked {
    fn keep(&mut self, frame: (u64, Vec<u8>)) {
        if self.0.len() >= QUEUE {
            self.0.pop_front();
        }
        self.0.push_back(frame);
    }

    fn acked(&mut self, upto: u64) {
        while self.0.front().is_some_and(|(seq, _)| *seq <= upto) {
            self.0.pop_front();
        }
    }
}

/// Writes on one stream the frames not acknowledged, then the new ones as they come, until the
/// stream fails or the queue closes. A frame is kept before it is written, so an attempt dropped
/// at any point loses nothing.
async fn session(
    stream: libp2p::Stream,
    epoch: u64,
    frames: &mut futures::stream::Fuse<mpsc::Receiver<(u64, Vec<u8>)>>,
    unacked: &mut Unacked,
) -> Session {
    let (reader, mut writer) = stream.split();
    let mut acks = futures::stream::unfold(reader, |mut reader| async move {
        let mut ack = [0u8; 8];
        reader.read_exact(&mut ack).await.ok()?;
        Some((u64::from_be_bytes(ack), reader))
    })
    .boxed_local()
    .fuse();
    let first = unacked.0.front().map_or(1, |(seq, _)| *seq);
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&epoch.to_be_bytes());
    head[8..].copy_from_slice(&first.to_be_bytes());
    if writer.write_all(&head).await.is_err() {
        return Session::Broke;
    }
    for (seq, frame) in &unacked.0 {
        if write_frame(&mut writer, *seq, frame).await.is_err() {
            return Session::Broke;
        }
    }
    loop {
        futures::select! {
            frame = frames.next() => match frame {
                Some((seq, frame)) => {
                    unacked.keep((seq, frame));
                    let (_, frame) = unacked.0.back().expect("just kept");
                    if write_frame(&mut writer, seq, frame).await.is_err() {
                        return Session::Broke;
                    }
                }
                None => return Session::Ended,
            },
            ack = acks.next() => match ack {
                Some(upto) => unacked.acked(upto),
                None => return Session::Broke,
            },
        }
    }
}

/// Opens a stream to `to` that its receiver took (it said [`READY`]).
async fn open(control: &mut libp2p_stream::Control, to: PeerId) -> Option<libp2p::Stream> {
    for attempt in 0..OPEN_ATTEMPTS {
        match control.open_stream(to, PROTOCOL).await {
            Ok(mut stream) => {
                let mut ready = [0u8; 1];
                if stream.read_exact(&mut ready).await.is_ok() && ready[0] == READY {
                    return Some(stream);
                }
            }
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => return None,
            Err(e) => tracing::debug!(%to, %e, "channel stream not opened"),
        }
        futures_timer::Delay::new(web_time::Duration::from_millis(20 << attempt)).await;
    }
    None
}

async fn write_frame(
    stream: &mut (impl futures::AsyncWrite + Unpin),
    seq: u64,
    frame: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // One write per frame: on a WebRTC stream every write is a data channel message of its
    // own, and on a relayed one a muxer frame of its own.
    let mut framed = Vec::with_capacity(12 + frame.len());
    framed.extend_from_slice(&seq.to_be_bytes());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(frame);
    stream.write_all(&framed).await?;
    stream.flush().await
}

/// Reads the frames of one incoming stream until it ends or breaks the framing.
async fn read(
    from: PeerId,
    mut stream: libp2p::Stream,
    mut arrived: mpsc::UnboundedSender<Arrived>,
) {
    if stream.write_all(&[READY]).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let mut head = [0u8; 16];
    if stream.read_exact(&mut head).await.is_err() {
        return;
    }
    let epoch = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
    let first = u64::from_be_bytes(head[8..].try_into().unwrap_or_default());
    if arrived
        .send(Arrived::Stream(from, epoch, first))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let mut head = [0u8; 12];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let seq = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(head[8..].try_into().unwrap_or_default()) as usize;
        if len > MAX_FRAME || seq == 0 {
            let reason = if seq == 0 {
                "channel frame numbered 0".to_owned()
            } else {
                format!("channel frame of {len} bytes; at most {MAX_FRAME}")
            };
            let _ = arrived.send(Arrived::Violation(from, reason)).await;
            return;
        }
        let mut frame = vec![0u8; len];
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        if arrived
            .send(Arrived::Frame(from, epoch, seq, frame))
            .await
            .is_err()
        {
            return;
        }
        // The frame reached us: the sender may forget it (and every one before it on this
        // stream).
        if stream.write_all(&seq.to_be_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<libp2p_stream::Behaviour>;
    type ToSwarm = Output;

    forward_to!(streams: pending_inbound, established_inbound, pending_outbound, established_outbound, handler_event);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(e) = &event {
            self.renewals
                .borrow_mut()
                .closed(e.peer_id, e.remaining_established == 0);
        }
        if let FromSwarm::ConnectionClosed(e) = &event
            && e.remaining_established == 0
        {
            // What was read before the close is handed on first, so that nothing read on the
            // old streams lands in the channel's next life.
            while let Ok(arrived) = self.arrived.try_recv() {
                self.on_arrived(arrived);
            }
            // Dropping the queue ends the writer task.
            let had = self.outgoing.remove(&e.peer_id).is_some()
                | self.inboxes.remove(&e.peer_id).is_some();
            if had {
                self.events.push_back(ChannelEvent::Closed(e.peer_id));
            }
        }
        self.streams.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Output, THandlerInEvent<Self>>> {
        loop {
            if let Some(report) = self.reports.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(Output::Report(report)));
            }
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(Output::Channel(event)));
            }
            if let Poll::Ready(Some((peer, stream))) = self.incoming.poll_next_unpin(cx) {
                // Read until the stream ends or a connection to the peer closes (looked at
                // first: nothing is read from a stream after that).
                let reading = read(peer, stream, self.arrived_tx.clone()).boxed_local();
                let closing = self.renewals.borrow_mut().next_close(peer);
                self.tasks.push(
                    futures::future::select(closing, reading)
                        .map(drop)
                        .boxed_local(),
                );
                continue;
            }
            if let Poll::Ready(Some(arrived)) = self.arrived.poll_next_unpin(cx) {
                self.on_arrived(arrived);
                continue;
            }
            // Finished tasks need no handling; polling drives the running ones.
            while let Poll::Ready(Some(())) = self.tasks.poll_next_unpin(cx) {}
            match self.streams.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(())) => {}
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|()| unreachable!("handled above")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What the channels hand the node: their events, and violations for the ledger.
#[derive(Debug)]
pub enum Output {
    /// A channel event.
    Channel(ChannelEvent),
    /// A report for the node's routing (violations).
    Report(Report),
}
