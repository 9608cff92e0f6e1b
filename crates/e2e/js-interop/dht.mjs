// A js-libp2p Kademlia client for tabmesh's DHT, for the interop test (crates/e2e): it joins
// the relay over TCP and reads or writes one record, then prints ONE JSON line on stdout.
//
//   node dht.mjs <relay http url> get <key>
//     {"found":true,"value":<utf8 or null>,"value_hex":..,"publisher":<peer id>,"seq":n,
//      "expires_at_ms":n,"copies":n,"refused":n,"envelope_hex":..,"duration_ms":n}
//     {"found":false,"error":..,"copies":n,"refused":n,...}
//   node dht.mjs <relay http url> put <key> <hex envelope>
//     {"ok":true,"peers":n,...} or {"ok":false,"error":..}
//
// `peers` counts the peers that echoed the PUT_VALUE, which is all js-libp2p can see: rust-kad
// echoes before tabmesh checks the record (StoreInserts::FilterBoth), so a refused record is
// echoed too. Read it back with `get` to know it was stored.
//
// js-libp2p only handles keys of the form /<namespace>/...: tabmesh records live under
// /tabmesh/..., and keys without a namespace are never found (every copy is refused).
// Exit status: 0 once the JSON line is printed (whatever it says), 2 on a usage error.
import './polyfill.mjs' // first: Node 20 lacks Promise.withResolvers
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { checkRecord, bestIndex } from './record.mjs'

const PROTOCOL = '/tabmesh/kad/1.0.0'
const QUERY_TIMEOUT_MS = 30_000
const USAGE = 'usage: node dht.mjs <relay http url> get <key>\n' +
  '       node dht.mjs <relay http url> put <key> <hex envelope>'

const utf8 = new TextEncoder()
const toHex = (bytes) => Buffer.from(bytes).toString('hex')
// seq and expiry are u64: numbers while exact, else strings.
const u64 = (n) => n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n.toString()

function text (bytes) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    return null
  }
}

/** An error as one line, with its cause (fetch hides ECONNREFUSED there). */
function describe (error) {
  const cause = error?.cause != null ? ` (${error.cause.code ?? error.cause.message ?? error.cause})` : ''
  return `${error?.name ?? 'Error'}: ${error?.message ?? error}${cause}`
}

function usage (message) {
  if (message) process.stderr.write(`dht.mjs: ${message}\n`)
  process.stderr.write(USAGE + '\n')
  process.exit(2)
}

function parseArgs (argv) {
  const [url, op, key, hex, ...extra] = argv
  if (!url || !op || !key) usage('missing arguments')
  if (!/^https?:\/\//.test(url)) usage(`not an http(s) URL: ${url}`)
  if (op === 'get' && hex === undefined) return { url, op, key }
  if (op === 'put' && hex !== undefined && extra.length === 0) {
    if (!/^([0-9a-fA-F]{2})+$/.test(hex)) usage('the envelope must be hex')
    return { url, op, key, envelope: Uint8Array.from(Buffer.from(hex, 'hex')) }
  }
  usage(`unknown command: ${argv.slice(1).join(' ')}`)
}

/** The relay's TCP multiaddrs (…/tcp/N/p2p/ID, not /ws) from its bootstrap document. */
async function relayAddrs (url) {
  const response = await fetch(new URL('/api/bootstrap', url), { signal: AbortSignal.timeout(10_000) })
  if (!response.ok) throw new Error(`GET /api/bootstrap: HTTP ${response.status}`)
  const { addrs } = await response.json()
  const tcpAddrs = (addrs ?? []).filter(a => /\/tcp\/\d+\/p2p\//.test(a))
  if (tcpAddrs.length === 0) throw new Error(`the relay offers no TCP address: ${JSON.stringify(addrs)}`)
  return tcpAddrs.map(a => multiaddr(a))
}

function startNode () {
  return createLibp2p({
    // A client only: no listening address (nobody needs to dial us).
    addresses: { listen: [] },
    // TCP, not WebSockets: Node 20 has no global WebSocket for @libp2p/websockets.
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // js-libp2p refuses to dial private (here loopback) addresses by default.
    connectionGater: { denyDialMultiaddr: () => false },
    services: {
      // kad-dht needs both: identify tells it the relay speaks PROTOCOL, and a peer enters the
      // routing table only after answering a ping.
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: PROTOCOL,
        // Never serve: with clientMode unset, kad-dht turns server when it thinks it is reachable.
        clientMode: true,
        // The default mapper drops private addresses, so the loopback relay (and the peers it
        // names) would never enter the routing table.
        peerInfoMapper: passthroughMapper,
        // Queries wait for the first self-query, which by default starts 1 s after start-up:
        // start it at once (it waits for the relay to enter the routing table).
        initialQuerySelfInterval: 0,
        // kad-dht routes a key /tabmesh/... to these by its namespace. The validator throws on a
        // copy tabmesh would refuse (a refused copy is dropped); the selector is required even
        // for a single copy and must keep the copy tabmesh keeps, or kad-dht would send
        // "corrections" towards an older copy.
        validators: { tabmesh: async (key, value) => { await checkRecord(key, value) } },
        selectors: { tabmesh: (key, values) => Math.max(0, bestIndex(values)) }
      })
    }
  })
}

async function get (dht, key) {
  const copies = [] // valid copies, as kad-dht reports them (it drops the invalid ones)
  let refused = 0
  let best = null
  const errors = []
  try {
    for await (const event of dht.get(key, { signal: AbortSignal.timeout(QUERY_TIMEOUT_MS) })) {
      if (event.name === 'PEER_RESPONSE' && event.messageName === 'GET_VALUE' && event.record != null) {
        copies.push(event.record.value)
      } else if (event.name === 'VALUE') {
        best = event.value
      } else if (event.name === 'QUERY_ERROR') {
        if (/invalid record/.test(event.error?.message)) refused++
        else errors.push(describe(event.error))
      }
    }
  } catch (error) {
    // The lookup failed or timed out, or a correction could not be sent: still report what was
    // found, picked by the same rule.
    errors.unshift(describe(error))
    if (copies.length > 0) best = copies[Math.max(0, bestIndex(copies))]
  }
  const counts = { copies: copies.length, refused }
  if (best == null) {
    const why = errors[0] ?? (refused > 0 ? `${refused} copies refused` : 'no copy found')
    return { found: false, error: why, ...counts }
  }
  const record = await checkRecord(key, best)
  if (record.tombstone) {
    return { found: false, error: 'removed by its publisher (tombstone)', tombstone: true, publisher: record.publisher, seq: u64(record.seq), ...counts }
  }
  return {
    found: true,
    value: text(record.value),
    value_hex: toHex(record.value),
    publisher: record.publisher,
    seq: u64(record.seq),
    expires_at_ms: u64(record.expiresAtMs),
    ...counts,
    // The whole signed envelope, as `put` takes it.
    envelope_hex: toHex(best),
    ...(errors.length > 0 ? { warnings: errors } : {})
  }
}

async function put (dht, key, envelope) {
  const echoed = new Set()
  const errors = []
  try {
    for await (const event of dht.put(key, envelope, { signal: AbortSignal.timeout(QUERY_TIMEOUT_MS) })) {
      if (event.name === 'PEER_RESPONSE' && event.messageName === 'PUT_VALUE' &&
          event.record != null && Buffer.compare(event.record.value, envelope) === 0) {
        echoed.add(event.from.toString())
      } else if (event.name === 'QUERY_ERROR') {
        errors.push(describe(event.error))
      }
    }
  } catch (error) {
    errors.unshift(describe(error))
  }
  if (echoed.size === 0) return { ok: false, error: errors[0] ?? 'no peer took the record', peers: 0 }
  return { ok: true, peers: echoed.size, ...(errors.length > 0 ? { warnings: errors } : {}) }
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const key = utf8.encode(args.key)
  const started = Date.now()
  let node = null
  let result
  try {
    const addrs = await relayAddrs(args.url)
    node = await startNode()
    await node.dial(addrs, { signal: AbortSignal.timeout(QUERY_TIMEOUT_MS) })
    result = args.op === 'get'
      ? await get(node.services.dht, key)
      : await put(node.services.dht, key, args.envelope)
  } catch (error) {
    const failed = args.op === 'get' ? { found: false } : { ok: false }
    result = { ...failed, error: describe(error) }
  }
  result.duration_ms = Date.now() - started
  process.stdout.write(JSON.stringify(result) + '\n')
  if (node != null) await node.stop()
  // Nothing is left to do; do not wait for stray timers or sockets.
  process.exit(0)
}

main().catch((error) => {
  process.stderr.write(`dht.mjs: ${error?.stack ?? error}\n`)
  process.exit(1)
})
