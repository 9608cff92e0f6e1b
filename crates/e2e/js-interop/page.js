// A js-libp2p browser node for the interop test (crates/e2e/tests/interop.rs): it reserves a
// slot on the tabmesh relay over WebSocket, listens on /webrtc, and exposes a few functions on
// `window` for the test to drive it. Bundled by `cargo xtask test` (esbuild), served by the relay.
import { rtcEvents } from './rtc-log.js'
import { createLibp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { webRTC } from '@libp2p/webrtc'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'

async function start () {
  const bootstrap = await (await fetch('/api/bootstrap')).json()
  const relay = bootstrap.addrs.find(a => a.includes('/ws/'))
  if (!relay) throw new Error('the relay offers no WebSocket address')
  const node = await createLibp2p({
    addresses: { listen: [relay + '/p2p-circuit', '/webrtc'] },
    transports: [
      webSockets(),
      // Loopback only: no STUN servers (js-libp2p's defaults are public ones).
      webRTC({ rtcConfiguration: { iceServers: bootstrap.ice_servers } }),
      circuitRelayTransport()
    ],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // js-libp2p refuses private (loopback) addresses by default.
    connectionGater: { denyDialMultiaddr: () => false },
    // CI machines are slow and busy (three pages on two cores): allow more than the defaults.
    connectionManager: { dialTimeout: 30_000, addressDialTimeout: 30_000 },
    // js-libp2p's connection monitor pings every connection every 10 s and aborts one whose
    // ping is not answered within 5 s. The test pings itself and checks the answers; the
    // monitor's pings only race with them (rust-libp2p answers one inbound ping stream per
    // connection at a time, a newer one replaces the older), and on a busy CI machine a tab
    // that is still starting can miss the 5 s, which aborted the relayed connection in the
    // middle of the test's WebRTC dial ("signal timed out").
    connectionMonitor: { enabled: false },
    services: { identify: identify(), ping: ping() }
  })
  window.jsnode = node
  window.jsId = () => node.peerId.toString()
  window.jsAddrs = () => node.getMultiaddrs().map(String)
  window.jsConnections = () => node.getConnections().map(c => ({
    peer: c.remotePeer.toString(),
    addr: c.remoteAddr.toString(),
    limited: c.limits != null
  }))
  // A failed dial says how far it got: js-libp2p reports each step of a dial as a progress
  // event (for /webrtc: relay dial, signaling stream, SDP offer and answer, ICE candidates),
  // and the browser's WebRTC objects say what they did (./rtc-log.js).
  window.jsDial = async (addr) => {
    const started = performance.now()
    const steps = []
    const at = () => `${Math.round(performance.now() - started)} ms`
    try {
      const connection = await node.dial(multiaddr(addr), {
        onProgress: (event) => steps.push(`${event.type} at ${at()}`)
      })
      return connection.remoteAddr.toString()
    } catch (e) {
      const rtc = rtcEvents().join(', ') || 'none'
      throw new Error(`${e.name}: ${e.message} after ${at()}; steps: ${steps.join(', ') || 'none'}; ` +
        `WebRTC (ms since the page loaded; dial started at ${Math.round(started)} ms): ${rtc}`)
    }
  }
  // A ping that is not answered fails within 30 s and says which connections were open.
  window.jsPing = async (addr) => {
    try {
      return await node.services.ping.ping(multiaddr(addr), { signal: AbortSignal.timeout(30_000) })
    } catch (e) {
      const open = window.jsConnections().map(c => `${c.addr} (${c.limited ? 'limited' : 'unlimited'})`)
      throw new Error(`${e.name}: ${e.message}; connections: ${open.join(', ') || 'none'}`)
    }
  }
  document.getElementById('status').textContent = 'js-libp2p ' + node.peerId.toString()
}

start().catch(e => {
  document.getElementById('status').textContent = 'error: ' + e
  console.error(e)
})
