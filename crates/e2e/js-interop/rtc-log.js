// Records what the browser's WebRTC objects do, with times, so that a js-libp2p dial that
// fails says where the browser's side of it stopped: each RTCPeerConnection's connection and
// ICE states, and each data channel's label and states. Imported by page.js before js-libp2p,
// because @libp2p/webrtc takes `globalThis.RTCPeerConnection` when its module is evaluated.
const events = []
const Native = globalThis.RTCPeerConnection
let count = 0

function watchChannel (note, channel, how) {
  note(`${how} channel "${channel.label}" ${channel.readyState}`)
  for (const type of ['open', 'closing', 'close', 'error']) {
    channel.addEventListener(type, () => note(`channel "${channel.label}" ${type}`))
  }
}

if (Native != null) {
  globalThis.RTCPeerConnection = class extends Native {
    constructor (...args) {
      super(...args)
      const id = ++count
      this.note = (what) => events.push(`pc${id} ${what} at ${Math.round(performance.now())} ms`)
      this.note('created')
      this.addEventListener('connectionstatechange', () => this.note(this.connectionState))
      this.addEventListener('iceconnectionstatechange', () => {
        this.note(`ice ${this.iceConnectionState}`)
      })
      this.addEventListener('datachannel', ({ channel }) => {
        watchChannel(this.note, channel, 'inbound')
      })
    }

    createDataChannel (label, options) {
      const channel = super.createDataChannel(label, options)
      watchChannel(this.note, channel, 'outbound')
      return channel
    }
  }
}

// The last `n` events, oldest first.
export function rtcEvents (n = 30) {
  return events.slice(-n)
}
