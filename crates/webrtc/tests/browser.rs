//! Two `RTCPeerConnection`s in one page (headless Chromium) connect through our signaling state
//! machines over an in-page pipe, then speak the data-channel framing: data, FIN, FIN_ACK.
//! Run with `cargo xtask test` (wasm-bindgen-test-runner in Chromium, loopback only).
#![cfg(target_arch = "wasm32")]
// clippy's allow-unwrap-in-tests does not see #[wasm_bindgen_test] functions as tests.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use futures::channel::mpsc;
use tabmesh_webrtc::browser::{PcEvent, PeerConnection, negotiate};
use tabmesh_webrtc::framing::{Flag, Frame, FrameDecoder, StreamAction, StreamClose};
use tabmesh_webrtc::signaling::{Role, SignalingError};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_time::{Duration, Instant};

wasm_bindgen_test_configure!(run_in_browser);

const TIMEOUT: Duration = Duration::from_secs(10);

type Negotiated = Result<
    (
        Option<tabmesh_webrtc::browser::DataChannel>,
        Vec<tabmesh_webrtc::browser::DataChannel>,
    ),
    SignalingError,
>;

/// Two peer connections in this page, negotiated with each other through our signaling state
/// machines over an in-page pipe (dialer -> listener and listener -> dialer).
async fn connected_pair() -> (PeerConnection, PeerConnection, Negotiated, Negotiated) {
    let mut dialer = PeerConnection::new(&[]).expect("dialer pc");
    let mut listener = PeerConnection::new(&[]).expect("listener pc");
    let (mut d_tx, mut l_rx) = mpsc::channel::<Vec<u8>>(16);
    let (mut l_tx, mut d_rx) = mpsc::channel::<Vec<u8>>(16);
    let (d, l) = futures::join!(
        negotiate(&mut dialer, Role::Dialer, TIMEOUT, &mut d_tx, &mut d_rx),
        negotiate(&mut listener, Role::Listener, TIMEOUT, &mut l_tx, &mut l_rx),
    );
    (dialer, listener, d, l)
}

#[wasm_bindgen_test]
async fn two_peer_connections_meet_through_signaling_and_close_a_stream_cleanly() {
    let (dialer, mut listener, d, l) = connected_pair().await;
    let (init, _) = d.expect("dialer connected");
    let (none, _) = l.expect("listener connected");
    assert!(init.is_some() && none.is_none());

    // A stream: the dialer opens a channel and writes "hello" then FIN.
    let mut channel = dialer.open_channel("");
    futures::select! {
        open = futures::FutureExt::fuse(channel.open()) => assert!(open, "the channel closed before opening"),
        () = futures::FutureExt::fuse(futures_timer::Delay::new(TIMEOUT)) => panic!("channel never opened"),
    }
    let mut close = StreamClose::new();
    channel
        .send(&Frame::data(b"hello".to_vec()).encode())
        .unwrap();
    for action in close.close_write(Instant::now()) {
        if let StreamAction::Send(frame) = action {
            channel.send(&frame.encode()).unwrap();
        }
    }

    // The listener gets the channel (the "init" one may come first), reads, and acknowledges.
    let mut incoming = loop {
        match listener.events.next().await {
            Some(PcEvent::DataChannel(ch)) if ch.channel.label().is_empty() => break ch,
            Some(_) => {}
            None => panic!("listener events ended"),
        }
    };
    let mut decoder = FrameDecoder::default();
    let mut remote = StreamClose::new();
    let mut received = Vec::new();
    while !received.contains(&StreamAction::ReadClosed) {
        let message = incoming.messages.next().await.expect("message");
        for frame in decoder.push(&message).unwrap() {
            received.extend(remote.on_frame(frame));
        }
    }
    assert_eq!(
        received,
        vec![
            StreamAction::Deliver(b"hello".to_vec()),
            StreamAction::Send(Frame::flag(Flag::FinAck)),
            StreamAction::ReadClosed,
        ]
    );
    incoming.send(&Frame::flag(Flag::FinAck).encode()).unwrap();
    // The dialer's write side is acknowledged.
    let mut mine = FrameDecoder::default();
    let ack = channel.messages.next().await.expect("FIN_ACK");
    let mut actions = Vec::new();
    for frame in mine.push(&ack).unwrap() {
        actions.extend(close.on_frame(frame));
    }
    assert_eq!(actions, vec![StreamAction::WriteClosed]);
}

#[wasm_bindgen_test]
async fn a_peer_that_never_answers_is_a_timeout_not_a_hang() {
    let mut dialer = PeerConnection::new(&[]).expect("dialer pc");
    let (mut tx, _kept_open) = mpsc::channel::<Vec<u8>>(16);
    let (_silent, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let result = negotiate(
        &mut dialer,
        Role::Dialer,
        Duration::from_millis(500),
        &mut tx,
        &mut rx,
    )
    .await;
    assert!(
        matches!(result, Err(SignalingError::Timeout(_))),
        "{result:?}"
    );
}

#[wasm_bindgen_test]
async fn garbage_on_the_signaling_stream_is_a_clear_error() {
    let mut listener = PeerConnection::new(&[]).expect("listener pc");
    let (mut tx, _out) = mpsc::channel::<Vec<u8>>(16);
    let (mut feed, mut rx) = mpsc::channel::<Vec<u8>>(16);
    futures::SinkExt::send(&mut feed, vec![0x03, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let result = negotiate(&mut listener, Role::Listener, TIMEOUT, &mut tx, &mut rx).await;
    assert!(
        matches!(result, Err(SignalingError::Malformed(_))),
        "{result:?}"
    );
}

#[wasm_bindgen_test]
async fn a_substream_carries_100_kib_each_way_and_closes_with_fin_ack() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use tabmesh_webrtc::substream::Substream;

    let (dialer, mut listener, d, l) = connected_pair().await;
    d.expect("dialer connected");
    l.expect("listener connected");

    let mut outbound = dialer.open_channel("");
    assert!(outbound.open().await);
    let mut outbound = Substream::new(outbound);
    let request: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let answer: Vec<u8> = request.iter().rev().copied().collect();

    let dial_side = async {
        outbound.write_all(&request).await.unwrap();
        outbound.close().await.unwrap();
        let mut got = Vec::new();
        outbound.read_to_end(&mut got).await.unwrap();
        got
    };
    let listen_side = async {
        let channel = loop {
            match listener.events.next().await {
                Some(PcEvent::DataChannel(ch)) if ch.channel.label().is_empty() => break ch,
                Some(_) => {}
                None => panic!("listener events ended"),
            }
        };
        let mut inbound = Substream::new(channel);
        let mut got = Vec::new();
        inbound.read_to_end(&mut got).await.unwrap();
        let reply: Vec<u8> = got.iter().rev().copied().collect();
        inbound.write_all(&reply).await.unwrap();
        inbound.close().await.unwrap();
        got
    };
    let work = futures::future::join(dial_side, listen_side);
    futures::select! {
        (answered, received) = futures::FutureExt::fuse(work) => {
            assert_eq!(received, request);
            assert_eq!(answered, answer);
        }
        () = futures::FutureExt::fuse(futures_timer::Delay::new(Duration::from_secs(30))) => {
            panic!("the exchange did not finish (a FIN_ACK missing would take 10 s per side)")
        }
    }
}

#[wasm_bindgen_test]
async fn the_muxer_opens_and_accepts_streams_and_reports_a_closed_connection() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::core::muxing::StreamMuxerExt;
    use tabmesh_webrtc::muxer::Connection;

    let (dialer, listener, d, l) = connected_pair().await;
    let (init, early_d) = d.expect("dialer connected");
    let (_, early_l) = l.expect("listener connected");
    // The dialer closes its init channel once connected, as the spec asks.
    if let Some(init) = init {
        init.channel.close();
    }
    let mut a = Connection::new(dialer, early_d);
    let mut b = Connection::new(listener, early_l);

    // Two streams, one each way, carried at the same time.
    let exchange = async {
        let mut out = futures::future::poll_fn(|cx| a.poll_outbound_unpin(cx))
            .await
            .unwrap();
        out.write_all(b"ping?").await.unwrap();
        out.close().await.unwrap();
        let mut reply = Vec::new();
        out.read_to_end(&mut reply).await.unwrap();
        reply
    };
    let serve = async {
        let mut inbound = futures::future::poll_fn(|cx| b.poll_inbound_unpin(cx))
            .await
            .unwrap();
        let mut got = Vec::new();
        inbound.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping?");
        inbound.write_all(b"pong!").await.unwrap();
        inbound.close().await.unwrap();
    };
    let (reply, ()) = futures::join!(exchange, serve);
    assert_eq!(reply, b"pong!");

    // Closing one side ends the other's connection with an error, not a hang.
    futures::future::poll_fn(|cx| a.poll_close_unpin(cx))
        .await
        .unwrap();
    let ended = futures::future::poll_fn(|cx| b.poll_unpin(cx));
    futures::select! {
        result = futures::FutureExt::fuse(ended) => assert!(result.is_err(), "{:?}", result.map(|_| ())),
        () = futures::FutureExt::fuse(futures_timer::Delay::new(Duration::from_secs(30))) => {
            panic!("the peer's close was never noticed")
        }
    }
}

/// The dialer's `init` channel is the dialer's to close. js-libp2p's dialer waits for it to be
/// open once the peer connection is up and closes it itself; a listener that closed it first
/// left that dialer waiting for an `open` that never came (its dial timed out, seen in CI).
#[wasm_bindgen_test]
async fn the_listener_leaves_the_dialers_init_channel_to_the_dialer() {
    use libp2p::core::muxing::StreamMuxerExt;
    use tabmesh_webrtc::muxer::Connection;
    use web_sys::RtcDataChannelState;

    let (_dialer, listener, d, l) = connected_pair().await;
    let (init, _) = d.expect("dialer connected");
    let mut init = init.expect("the dialer opened an init channel");
    let (_, early) = l.expect("listener connected");
    let mut muxer = Connection::new(listener, early);
    // The listener's muxer runs for a while (whether the init channel reached it before or
    // after the connection was up): it must neither offer it as a stream nor close it.
    let inbound = futures::future::poll_fn(|cx| muxer.poll_inbound_unpin(cx));
    futures::select! {
        stream = futures::FutureExt::fuse(inbound) => {
            panic!("the init channel came out as a stream: {:?}", stream.map(|_| ()))
        }
        () = futures::FutureExt::fuse(futures_timer::Delay::new(Duration::from_millis(500))) => {}
    }
    assert!(init.open().await, "the dialer's init channel opened");
    assert_eq!(
        init.channel.ready_state(),
        RtcDataChannelState::Open,
        "still open for the dialer to close"
    );
    init.channel.close();
}
