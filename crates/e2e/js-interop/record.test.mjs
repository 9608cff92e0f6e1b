// Offline checks of record.mjs (no network): `node --test record.test.mjs`.
// The cases follow the tests of crates/core/src/dht/record.rs.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { checkRecord, decodeEnvelope, parseEnvelope, bestIndex, precedence, signEnvelope, LIMITS } from './record.mjs'

const NOW = 1_800_000_000_000
const utf8 = (s) => new TextEncoder().encode(s)
const sign = (k, key, value, seq, exp = NOW + 60_000, tomb = false) =>
  signEnvelope(k, utf8(key), utf8(value), seq, exp, tomb)

const alice = await generateKeyPair('Ed25519')
const bob = await generateKeyPair('Ed25519')

test('round trips and verifies', async () => {
  const bytes = await sign(alice, '/tabmesh/color', 'ultramarine', 3)
  const r = await checkRecord(utf8('/tabmesh/color'), bytes, NOW)
  assert.equal(new TextDecoder().decode(r.value), 'ultramarine')
  assert.equal(r.seq, 3n)
  assert.equal(r.expiresAtMs, BigInt(NOW + 60_000))
  assert.equal(r.publisher, peerIdFromPrivateKey(alice).toString())
  assert.equal(r.tombstone, false)
})

test('refuses a record replayed under another key', async () => {
  const bytes = await sign(alice, '/tabmesh/color', 'blue', 1)
  await assert.rejects(decodeEnvelope(utf8('/tabmesh/colour'), bytes), /signature does not match/)
  await assert.rejects(decodeEnvelope(utf8('color'), bytes), /signature does not match/)
})

test('refuses every flipped byte', async () => {
  const key = utf8('/tabmesh/k')
  const bytes = await sign(alice, '/tabmesh/k', 'value', 1)
  for (let i = 0; i < bytes.length; i++) {
    const tampered = Uint8Array.from(bytes)
    tampered[i] ^= 0x01
    await assert.rejects(checkRecord(key, tampered, NOW), undefined, `byte ${i}`)
  }
})

test('refuses truncated, trailing and foreign bytes', async () => {
  const key = utf8('/tabmesh/k')
  const bytes = await sign(alice, '/tabmesh/k', 'value', 1)
  for (let cut = 0; cut < bytes.length; cut++) {
    await assert.rejects(decodeEnvelope(key, bytes.subarray(0, cut)), undefined, `cut at ${cut}`)
  }
  const trailing = new Uint8Array([...bytes, 0])
  await assert.rejects(decodeEnvelope(key, trailing), /trailing bytes/)
  await assert.rejects(decodeEnvelope(key, utf8('hello world')), /bad magic/)
  const flags = Uint8Array.from(bytes)
  flags[4] = 0x80
  await assert.rejects(decodeEnvelope(key, flags), /unknown flags/)
})

test('enforces limits and expiry', async () => {
  const longKey = '/tabmesh/' + 'k'.repeat(LIMITS.maxKeyBytes)
  await assert.rejects(checkRecord(utf8(longKey), await sign(alice, longKey, 'v', 1), NOW), /the key is/)
  const big = 'x'.repeat(LIMITS.maxValueBytes + 1)
  await assert.rejects(checkRecord(utf8('/tabmesh/k'), await sign(alice, '/tabmesh/k', big, 1), NOW), /the value is/)
  const r = await sign(alice, '/tabmesh/k', 'v', 1)
  await assert.rejects(checkRecord(utf8('/tabmesh/k'), r, NOW + 60_000), /expired 0 ms ago/)
  const far = await sign(alice, '/tabmesh/k', 'v', 1, NOW + Number(LIMITS.maxTtlMs + LIMITS.clockSkewMs) + 1)
  await assert.rejects(checkRecord(utf8('/tabmesh/k'), far, NOW), /beyond the maximum lifetime/)
})

test('the key belongs to the publisher of its live record', async () => {
  const p = async (...a) => parseEnvelope(await sign(...a))
  const a1 = await p(alice, '/tabmesh/k', 'one', 1)
  const a2 = await p(alice, '/tabmesh/k', 'two', 2)
  const b1 = await p(bob, '/tabmesh/k', "bob's", 1)
  assert.equal(precedence(a1, a2, NOW), 'replace')
  assert.equal(precedence(a2, a1, NOW), 'stale')
  assert.equal(precedence(a1, a1, NOW), 'unchanged')
  assert.equal(precedence(a1, b1, NOW), 'held-by-other')
  assert.equal(precedence(a1, b1, NOW + 60_000), 'replace')
  const removed = await p(alice, '/tabmesh/k', '', 3, NOW + 60_000, true)
  assert.equal(precedence(a2, removed, NOW), 'replace')
  assert.equal(precedence(removed, b1, NOW), 'replace')
  assert.equal(precedence(removed, a2, NOW), 'stale')
  const refreshed = await p(alice, '/tabmesh/k', 'two', 2, NOW + 90_000)
  assert.equal(precedence(a2, refreshed, NOW), 'replace')
  assert.equal(precedence(refreshed, a2, NOW), 'unchanged')
})

test('the selector keeps the copy ops::best keeps', async () => {
  const s = (...a) => sign(...a)
  const a1 = await s(alice, '/tabmesh/k', 'one', 1)
  const a2 = await s(alice, '/tabmesh/k', 'two', 2)
  const b1 = await s(bob, '/tabmesh/k', 'bob', 1)
  assert.equal(bestIndex([a1, a2, a1], NOW), 1)
  assert.equal(bestIndex([a2, a1], NOW), 0)
  assert.equal(bestIndex([a1, b1], NOW), 0) // first live holder keeps it
  assert.equal(bestIndex([b1, a2], NOW), 0)
  assert.equal(bestIndex([utf8('junk'), a1], NOW), 1)
  assert.equal(bestIndex([utf8('junk')], NOW), -1)
})

test('the services rule: only the peer a key names publishes under it', async () => {
  const a = peerIdFromPrivateKey(alice).toString()
  const b = peerIdFromPrivateKey(bob).toString()
  const ok = async (k, by = alice) => checkRecord(utf8(k), await sign(by, k, '{}', 1), NOW)
  for (const prefix of ['/tabmesh/', '']) {
    await ok(`${prefix}svc/@${a}`)
    await ok(`${prefix}svc/echo/${a}`)
    await assert.rejects(ok(`${prefix}svc/@${a}`, bob), /belongs to/)
    await assert.rejects(ok(`${prefix}svc/echo/${a}`, bob), /belongs to/)
    await assert.rejects(ok(`${prefix}svc`), /provider key/)
    await assert.rejects(ok(`${prefix}svc/echo`), /provider key/)
    await assert.rejects(ok(`${prefix}svc/Echo/${a}`), /bad service name/)
    await assert.rejects(ok(`${prefix}svc/echo/not-a-peer`), /not a services key/)
    await assert.rejects(ok(`${prefix}svc/echo/${a}/x`), /not a services key/)
  }
  await ok(`/tabmesh/svcx/${b}`) // outside the namespace
  await ok('/tabmesh/color')
})
