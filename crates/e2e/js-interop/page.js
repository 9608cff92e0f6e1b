// A js-libp2p browser node for the interop test (crates/e2e/tests/interop.rs): it reserves a
// slot on the tabmesh relay over WebSocket, listens on /webrtc, and exposes a few functions on
// `window` for the test to drive it. Bundled by `cargo xtask test` (esbuild), served by the relay.
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
    // js-libp2p's connection monitor pings every connection on its own (one outbound ping
    // stream per connection by default): the test's pings must not collide with it.
    services: { identify: identify(), ping: ping({ maxOutboundStreams: 4 }) }
  })
  window.jsnode = node
  window.jsId = () => node.peerId.toString()
  window.jsAddrs = () => node.getMultiaddrs().map(String)
  window.jsConnections = () => node.getConnections().map(c => ({
    peer: c.remotePeer.toString(),
    addr: c.remoteAddr.toString(),
    limited: c.limits != null
  }))
  window.jsDial = async (addr) => (await node.dial(multiaddr(addr))).remoteAddr.toString()
  window.jsPing = async (addr) => node.services.ping.ping(multiaddr(addr))
  document.getElementById('status').textContent = 'js-libp2p ' + node.peerId.toString()
}

start().catch(e => {
  document.getElementById('status').textContent = 'error: ' + e
  console.error(e)
})
