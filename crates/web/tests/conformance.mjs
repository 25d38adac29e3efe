// The conformance suite of recorded scenarios, against the wasm build under
// Node: the same file and the same expectations as tests/conformance.rs.
// Run by `scripts/wasm test`, which builds the module and points WEB_PKG at it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const pkg = process.env.WEB_PKG;
if (!pkg) throw new Error('WEB_PKG must name the wasm-bindgen output (scripts/wasm test sets it)');
const web = require(`${pkg}/web.js`);
const scenarios = JSON.parse(readFileSync(new URL('./scenarios.json', import.meta.url), 'utf8'));
const key = (name) => (name ? web.Key.fromKms(JSON.stringify(scenarios.keys[name])) : undefined);

test('the browser build uses RustCrypto', () => {
  assert.equal(web.backend(), 'RustCrypto');
});

test('the KMS channel judges resets and answers by the pinned key and the clock given', () => {
  const k = scenarios.kms;
  const ch = new web.KmsChannel(k.domain, JSON.stringify(k.pinnedKey));
  assert.equal(ch.pushedReset(k.pushedReset, k.session, k.signedAtMs + 1000), 'device disabled');
  assert.throws(() => ch.pushedReset(k.pushedReset, k.session, k.signedAtMs + 10 * 60 * 1000), /stale|reset/i);
  assert.throws(() => ch.pushedReset(k.forgedReset, k.session, k.signedAtMs + 1000), /signature/i);
  const wrapped = ch.beginHandshake('a-token', 'browser-1');
  assert.ok(!wrapped.includes('a-token'), 'the token travels encrypted');
  assert.throws(() => ch.finishHandshake(k.forgedHandshakeAnswer, k.signedAtMs + 1000), /signature/i);
  assert.equal(ch.sessionUri, undefined);
  assert.throws(() => new web.KmsChannel(k.domain, '{'), /not a JWK/);
});

test('recorded events open, or are refused, exactly as natively', () => {
  const timeline = new web.Timeline();
  for (const c of scenarios.events) {
    const ev = JSON.stringify(c.event);
    const got = JSON.parse(c.key ? timeline.open(key(c.key), scenarios.spaceResource, ev)
      : timeline.openWithoutKey(c.refusal ?? undefined, scenarios.spaceResource, ev));
    assert.equal(got.seq, c.event.seq, c.name);
    if (c.expect.reasonContains) {
      assert.equal(got.content.type, 'unreadable', `${c.name}: ${JSON.stringify(got)}`);
      assert.ok(got.content.reason.includes(c.expect.reasonContains), `${c.name}: ${got.content.reason}`);
    } else {
      assert.deepEqual(got.content, c.expect, c.name);
    }
  }
});

test('search tokens are the native ones, byte for byte', () => {
  for (const c of scenarios.search) {
    const got = c.text !== undefined ? web.textTokens(key(c.key), c.text) : web.queryTokens(key(c.key), c.query);
    assert.ok(c.tokens.length > 0);
    assert.deepEqual(got, c.tokens);
  }
});

function decrypt(keyB64, ct) {
  const HEADER_LEN = web.fileHeaderLen();
  const dec = new web.FileDecryptor(keyB64, ct.subarray(0, HEADER_LEN));
  const seg = dec.sealedSegmentLen();
  const parts = [];
  const body = ct.subarray(HEADER_LEN);
  for (let at = 0; ; ) {
    const end = Math.min(at + seg, body.length);
    const last = end === body.length;
    parts.push(dec.open(body.subarray(at, end), last));
    at = end;
    if (last) break;
  }
  dec.finish();
  return Buffer.concat(parts);
}

test('recorded files decrypt in the browser, and cut or tampered ones fail', () => {
  for (const c of scenarios.files) {
    const ct = Buffer.from(c.ciphertext, 'base64');
    if (c.expect === 'ok') {
      assert.deepEqual(decrypt(c.keyB64, ct), Buffer.from(c.plaintext, 'base64'), c.name);
    } else {
      assert.throws(() => decrypt(c.keyB64, ct), (e) => e.message.toLowerCase().includes(c.expect.errorContains), c.name);
    }
  }
});

test('what the browser seals, the browser opens; bad input is refused clearly', () => {
  const k = key('k1');
  const now = scenarios.events[0].event.create_date;
  const sealed = web.sealEvent(k, 'alice@acme.example', now, 'message', 'fresh-1', undefined, undefined, 'sent from a browser');
  const ev = { ...scenarios.events[0].event, seq: 100, client_event_id: 'fresh-1', ciphertext: sealed, create_date: now };
  const got = JSON.parse(new web.Timeline().open(k, scenarios.spaceResource, JSON.stringify(ev)));
  assert.deepEqual(got.content, { type: 'text', text: 'sent from a browser' });
  assert.throws(() => web.Key.fromKms('{"uri":"kms://x/keys/1"}'), /key object is not valid/);
  assert.throws(() => new web.Timeline().open(k, 'no uri', JSON.stringify(ev)), /kms:\/\/ URI/);
  assert.throws(() => web.sealEvent(k, 'a', now, 'title', 'x', undefined, undefined, 't'), /cannot seal a title/);
  // A file round trip in the browser, with a fresh key.
  const enc = new web.FileEncryptor(4096);
  const plain = Buffer.alloc(9000, 7);
  const ct = Buffer.concat([Buffer.from(enc.header()), Buffer.from(enc.seal(plain.subarray(0, 4096), false)),
    Buffer.from(enc.seal(plain.subarray(4096, 8192), false)), Buffer.from(enc.seal(plain.subarray(8192), true))]);
  assert.deepEqual(decrypt(enc.keyB64(), ct), plain);
});
