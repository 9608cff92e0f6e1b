// tabmesh's signed DHT record envelope ("tmr1"), checked the way tabmesh checks it, for the
// js-libp2p Kademlia validator and selector in dht.mjs. Mirrors crates/core/src/dht/record.rs
// (`SignedRecord::decode`, `validate`, `check`, `precedence`; `check_namespace` only in part, see
// checkServicesKey) and `best` in crates/core/src/dht/ops.rs: keep them in step.
//
//   "tmr1" | flags u8 | seq u64 | expires_at_ms u64 | publisher len u16 + peer id bytes
//          | value len u32 + value | signature len u16 + signature            (big-endian)
//
// The Ed25519 signature (by the key inlined in the publisher's peer id) covers
// SIGNING_DOMAIN | u16 key length | key | every field above but the signature.
import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'

const MAGIC = new TextEncoder().encode('tmr1')
const SIGNING_DOMAIN = new TextEncoder().encode('tabmesh-dht-record-v1\0')
const FLAG_TOMBSTONE = 1
const MAX_PEER_ID_BYTES = 64
const MAX_SIGNATURE_BYTES = 128
// An identity multihash may inline at most 42 bytes of key (rust libp2p-identity's PeerId rule).
const MAX_INLINE_KEY_BYTES = 42

/** RecordLimits::default() in record.rs. */
export const LIMITS = Object.freeze({
  maxKeyBytes: 128,
  maxValueBytes: 4 * 1024,
  maxTtlMs: 24n * 3_600_000n,
  clockSkewMs: 60_000n
})

/** A record that tabmesh would refuse; `message` follows RecordError's text. */
export class RecordError extends Error {
  constructor (message) {
    super(message)
    this.name = 'RecordError'
  }
}

const malformed = (why) => new RecordError(`malformed record: ${why}`)

/** A cursor over the envelope that fails instead of reading past the end. */
class Reader {
  constructor (bytes) {
    this.bytes = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.at = 0
  }

  take (n) {
    if (this.bytes.length - this.at < n) throw malformed('truncated')
    const out = this.bytes.subarray(this.at, this.at + n)
    this.at += n
    return out
  }

  u8 () { return this.take(1)[0] }
  u16 () { this.take(2); return this.view.getUint16(this.at - 2) }
  u32 () { this.take(4); return this.view.getUint32(this.at - 4) }
  u64 () { this.take(8); return this.view.getBigUint64(this.at - 8) }
}

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])

function concat (...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}

function u16Prefixed (bytes) {
  const out = new Uint8Array(2 + bytes.length)
  new DataView(out.buffer).setUint16(0, bytes.length)
  out.set(bytes, 2)
  return out
}

/** A minimal unsigned varint at `at`: [value, next offset]. */
function varint (bytes, at) {
  let value = 0
  for (let shift = 0, i = at; i < bytes.length && shift < 35; shift += 7, i++) {
    value += (bytes[i] & 0x7f) * 2 ** shift
    if ((bytes[i] & 0x80) === 0) {
      if (i > at && bytes[i] === 0) break // not minimal
      return [value, i + 1]
    }
  }
  return [null, at]
}

/**
 * The public key inlined in a peer id (an identity multihash of the protobuf-encoded key), as
 * `names::inline_public_key` reads it; tabmesh builds libp2p-identity with Ed25519 only.
 */
function publisherKey (peerIdBytes) {
  const [code, at] = varint(peerIdBytes, 0)
  const [length, start] = code == null ? [null, 0] : varint(peerIdBytes, at)
  if (length == null || start + length !== peerIdBytes.length) {
    throw malformed('publisher is not a peer id')
  }
  if (code === 0x12 && length === 32) {
    // A valid (sha256) peer id, but it does not carry its key.
    throw new RecordError("the publisher's peer id carries no public key")
  }
  if (code !== 0x00 || length > MAX_INLINE_KEY_BYTES) throw malformed('publisher is not a peer id')
  let key
  try {
    key = publicKeyFromProtobuf(peerIdBytes.subarray(start))
  } catch {
    throw new RecordError("the publisher's peer id carries no public key")
  }
  if (key.type !== 'Ed25519') throw new RecordError("the publisher's peer id carries no public key")
  const peerId = peerIdFromPublicKey(key)
  // Rust signs over the peer id bytes as found; a non-canonical encoding of the same key would
  // name another peer id, so refuse it rather than report a publisher that did not sign.
  if (!equal(peerId.toMultihash().bytes, peerIdBytes)) throw malformed('publisher is not a peer id')
  return { key, peerId }
}

/**
 * Parses envelope bytes without checking the signature (for the selector: every copy it sees
 * has been through the validator already). Throws RecordError.
 */
export function parseEnvelope (bytes) {
  const r = new Reader(bytes)
  if (!equal(r.take(4), MAGIC)) throw malformed('not a tabmesh record (bad magic)')
  const flags = r.u8()
  if ((flags & ~FLAG_TOMBSTONE) !== 0) throw malformed('unknown flags')
  const seq = r.u64()
  const expiresAtMs = r.u64()
  const publisherLen = r.u16()
  if (publisherLen > MAX_PEER_ID_BYTES) throw malformed('publisher id too long')
  const publisherBytes = r.take(publisherLen)
  const valueLen = r.u32()
  const value = r.take(valueLen)
  const bodyEnd = r.at
  const signatureLen = r.u16()
  if (signatureLen > MAX_SIGNATURE_BYTES) throw malformed('signature too long')
  const signature = r.take(signatureLen)
  if (r.at !== bytes.length) throw malformed('trailing bytes')
  const tombstone = (flags & FLAG_TOMBSTONE) !== 0
  if (tombstone && value.length > 0) throw malformed('a tombstone carries no value')
  return { seq, expiresAtMs, publisherBytes, value, tombstone, signature, body: bytes.subarray(0, bodyEnd) }
}

/** The bytes the publisher signs: domain, key, body (record.rs `signed_bytes`). */
export const signedBytes = (key, body) => concat(SIGNING_DOMAIN, u16Prefixed(key), body)

/**
 * `SignedRecord::decode`: parses the envelope found under `key` (bytes) and checks the
 * signature. Returns { seq, expiresAtMs (BigInt), publisher (peer id string), value, tombstone }.
 */
export async function decodeEnvelope (key, bytes) {
  const record = parseEnvelope(bytes)
  const { key: publicKey, peerId } = publisherKey(record.publisherBytes)
  if (!(await publicKey.verify(signedBytes(key, record.body), record.signature))) {
    throw new RecordError('the signature does not match the publisher, key and contents')
  }
  return { ...record, publisher: peerId.toString() }
}

const PREFIX = '/tabmesh/'
const SERVICES = 'svc'

/** A peer id as rust's `PeerId::from_str` reads it (base58 only), as a string, or null. */
function peerIdText (text) {
  try {
    const id = peerIdFromString(text)
    return id.toString() === text ? text : null
  } catch {
    return null
  }
}

/** `descriptor::check_name`. */
const isServiceName = (name) => name.length >= 1 && name.length <= 32 && /^[a-z][a-z0-9-]*$/.test(name)

/**
 * `record::check_namespace`, in part: the services' keys (`svc`, `svc/<name>`, `svc/<name>/<peer>`,
 * `svc/@<peer>`, under `/tabmesh/` or not) and who may publish under them. The value of a
 * descriptor or index record (JSON, `Descriptor::decode` / `Index::decode`) is NOT checked here.
 */
export function checkServicesKey (key, publisher) {
  let text
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(key)
  } catch {
    return // not UTF-8: outside the namespace
  }
  if (text.startsWith(PREFIX)) text = text.slice(PREFIX.length)
  if (text !== SERVICES && !text.startsWith(SERVICES + '/')) return
  const bad = () => new RecordError(`bad descriptor: "${text}" is not a services key`)
  if (text === SERVICES) throw new RecordError(`bad descriptor: ${text} is a provider key; it holds no record`)
  const parts = text.slice(SERVICES.length + 1).split('/')
  let owner
  if (parts.length === 1 && parts[0].startsWith('@')) {
    owner = peerIdText(parts[0].slice(1))
    if (owner == null) throw bad()
  } else if (parts.length === 1 || parts.length === 2) {
    if (!isServiceName(parts[0])) throw new RecordError(`bad service name "${parts[0]}"`)
    if (parts.length === 1) throw new RecordError(`bad descriptor: ${text} is a provider key; it holds no record`)
    owner = peerIdText(parts[1])
    if (owner == null) throw bad()
  } else {
    throw bad()
  }
  if (owner !== publisher) throw new RecordError(`${text} belongs to ${owner}, not to its publisher`)
}

/**
 * `record::check`: decode, then the limits, the clock (`nowMs`, Unix ms) and the services'
 * namespace rule (see checkServicesKey for what of it is mirrored). Throws RecordError.
 */
export async function checkRecord (key, bytes, nowMs = Date.now()) {
  if (bytes.length > LIMITS.maxValueBytes + 256) {
    throw new RecordError(`the value is ${bytes.length} bytes; at most ${LIMITS.maxValueBytes} are allowed`)
  }
  const record = await decodeEnvelope(key, bytes)
  if (key.length === 0) throw new RecordError('the key is empty')
  if (key.length > LIMITS.maxKeyBytes) {
    throw new RecordError(`the key is ${key.length} bytes; at most ${LIMITS.maxKeyBytes} are allowed`)
  }
  if (record.value.length > LIMITS.maxValueBytes) {
    throw new RecordError(`the value is ${record.value.length} bytes; at most ${LIMITS.maxValueBytes} are allowed`)
  }
  const now = BigInt(nowMs)
  if (now >= record.expiresAtMs) {
    throw new RecordError(`the record expired ${now - record.expiresAtMs} ms ago`)
  }
  const ahead = record.expiresAtMs - now
  if (ahead > LIMITS.maxTtlMs + LIMITS.clockSkewMs) {
    throw new RecordError(`the record's expiry is ${ahead} ms ahead, beyond the maximum lifetime`)
  }
  checkServicesKey(key, record.publisher)
  return record
}

/**
 * `record::precedence`: how `incoming` compares with `held` (both parsed):
 * 'replace' | 'unchanged' | 'stale' | 'held-by-other'.
 */
export function precedence (held, incoming, nowMs = Date.now()) {
  if (BigInt(nowMs) >= held.expiresAtMs) return 'replace'
  if (!equal(held.publisherBytes, incoming.publisherBytes)) {
    return held.tombstone ? 'replace' : 'held-by-other'
  }
  const cmp = (a, b) => (a > b) - (a < b)
  const order = cmp(incoming.seq, held.seq) || cmp(incoming.expiresAtMs, held.expiresAtMs)
  if (order > 0) return 'replace'
  if (order === 0 || incoming.seq === held.seq) return 'unchanged'
  return 'stale'
}

/**
 * `ops::best`: the index of the copy tabmesh keeps among `envelopes` (in the order found), or
 * -1 if none parses. A fold: the first copy is held; a later one replaces it only when
 * `precedence` says so.
 */
export function bestIndex (envelopes, nowMs = Date.now()) {
  let best = -1
  let held = null
  envelopes.forEach((bytes, i) => {
    let copy
    try { copy = parseEnvelope(bytes) } catch { return }
    if (held == null || precedence(held, copy, nowMs) === 'replace') {
      best = i
      held = copy
    }
  })
  return best
}

/**
 * `SignedRecord::sign` + `encode`, for tests: an envelope of `value` under `key` (bytes),
 * signed with an Ed25519 @libp2p/crypto private key.
 */
export async function signEnvelope (privateKey, key, value, seq, expiresAtMs, tombstone = false) {
  const publisher = peerIdFromPublicKey(privateKey.publicKey).toMultihash().bytes
  const head = new Uint8Array(4 + 1 + 8 + 8)
  head.set(MAGIC)
  head[4] = tombstone ? FLAG_TOMBSTONE : 0
  const view = new DataView(head.buffer)
  view.setBigUint64(5, BigInt(seq))
  view.setBigUint64(13, BigInt(expiresAtMs))
  const valueLen = new Uint8Array(4)
  new DataView(valueLen.buffer).setUint32(0, value.length)
  const body = concat(head, u16Prefixed(publisher), valueLen, value)
  const signature = await privateKey.sign(signedBytes(key, body))
  return concat(body, u16Prefixed(signature))
}
