//! libp2p's perf protocol (`/perf/1.0.0`) as a behaviour: stream throughput between two peers,
//! over whichever connection joins them (direct WebRTC or relayed).
//!
//! The wire side is in [`protocol`]. This behaviour carries the streams (`libp2p-stream`),
//! serves every peer's runs (at most [`protocol::MAX_SERVING`] at once; a peer that opens more is
//! refused and reported for the misbehaviour ledger) and times the runs a user asks for.

pub mod protocol;

use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use libp2p::swarm::{NetworkBehaviour, THandler, THandlerInEvent, ToSwarm};
use tabmesh_core::peers::ConnectionKind;
use tabmesh_core::wire_log::Topic;
use web_time::Duration;

pub use protocol::{MAX_BYTES, MAX_SERVING, PROTOCOL};
pub use tabmesh_core::perf::PerfReport;

use crate::NodeError;
use crate::forward::forward_to;
use crate::report::Report;

/// The longest a run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a run's measurement (or why there is none) goes.
pub type PerfReplySender = oneshot::Sender<Result<PerfReport, String>>;

/// The perf protocol of a node.
pub struct Behaviour {
    streams: libp2p_stream::Behaviour,
    control: libp2p_stream::Control,
    incoming: libp2p_stream::IncomingStreams,
    /// Runs and served streams (each ends by itself).
    tasks: FuturesUnordered<LocalBoxFuture<'static, ()>>,
    /// Each served stream holds a clone.
    serving: Rc<()>,
    events: VecDeque<Report>,
}

impl Behaviour {
    /// A perf behaviour that serves `/perf/1.0.0`.
    pub fn new() -> Result<Self, NodeError> {
        let streams = libp2p_stream::Behaviour::new();
        let mut control = streams.new_control();
        let incoming = control
            .accept(PROTOCOL)
            .map_err(|e| NodeError::Transport(e.to_string()))?;
        Ok(Self {
            streams,
            control,
            incoming,
            tasks: FuturesUnordered::new(),
            serving: Rc::new(()),
            events: VecDeque::new(),
        })
    }

    /// Times a run to `peer` over the `connection` we have to it: `upload` bytes there,
    /// `download` back.
    pub fn run(
        &mut self,
        peer: PeerId,
        connection: ConnectionKind,
        upload: u64,
        download: u64,
        reply: PerfReplySender,
    ) {
        let mut control = self.control.clone();
        self.tasks.push(
            async move {
                let run = async {
                    let stream = control
                        .open_stream(peer, PROTOCOL)
                        .await
                        .map_err(|e| e.to_string())?;
                    protocol::run(stream, upload, download)
                        .await
                        .map_err(|e| format!("perf run failed: {e}"))
                };
                let timeout = futures_timer::Delay::new(RUN_TIMEOUT);
                let result = futures::select! {
                    result = run.fuse() => result,
                    () = timeout.fuse() => Err(format!(
                        "perf run timed out after {} s", RUN_TIMEOUT.as_secs()
                    )),
                };
                let _ = reply.send(result.map(|(upload_ms, download_ms)| PerfReport {
                    peer_id: peer.to_base58(),
                    connection,
                    upload_bytes: upload,
                    upload_ms,
                    download_bytes: download,
                    download_ms,
                }));
            }
            .boxed_local(),
        );
    }

    /// Serves a peer's perf stream, unless too many are being served already.
    fn serve(&mut self, peer: PeerId, stream: libp2p::Stream) {
        if Rc::strong_count(&self.serving) > MAX_SERVING {
            self.events.push_back(Report::Misbehaved {
                peer,
                topic: Topic::Perf,
                reason: format!("perf stream refused: {MAX_SERVING} being served"),
            });
            return;
        }
        let slot = self.serving.clone();
        self.tasks.push(
            async move {
                let _slot = slot;
                if let Err(e) = protocol::serve(stream).await {
                    tracing::info!(%peer, %e, "perf stream ended with an error");
                }
            }
            .boxed_local(),
        );
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<libp2p_stream::Behaviour>;
    type ToSwarm = Report;

    forward_to!(streams: pending_inbound, established_inbound, pending_outbound, established_outbound, swarm_event, handler_event);

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(report) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(report));
            }
            if let Poll::Ready(Some((peer, stream))) = self.incoming.poll_next_unpin(cx) {
                self.serve(peer, stream);
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
