// The web client as people use it, in a real browser (Chromium, driven by
// playwright-core), against the servers of `custos up`: alice and bob of
// acme and dave of globex sign in through their orgs' identity providers,
// read what the CLI sent, and chat live across orgs; the CLI reads what the
// browsers sent. Screenshots of the main screens go to target/screenshots.
//
// Needs the `custos` binary (CUSTOS_BIN, default target/debug/custos) and
// Chromium (CHROMIUM, default /usr/bin/chromium): without them it fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '../../..');
const BIN = process.env.CUSTOS_BIN ?? join(root, 'target/debug/custos');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = join(root, 'target/screenshots');

let up, ready, browser, work;

function portFree(port) {
  return new Promise((ok) => {
    const s = createServer().once('error', () => ok(false)).once('listening', () => s.close(() => ok(true)));
    s.listen(port, '127.0.0.1');
  });
}

async function freeBase() {
  for (let i = 0; i < 200; i++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    let all = true;
    for (let k = 0; k < 7 && all; k++) all = await portFree(base + k);
    if (all) return base;
  }
  throw new Error('no seven free ports');
}

const org = (d) => ready.orgs.find((o) => o.domain === d);
const password = (u) => ready.orgs.flatMap((o) => o.users).find(([id]) => id === u)[1];

function cliText(user, ...args) {
  return execFileSync(BIN, ['--json', '--config-dir', join(work, user), ...args], { encoding: 'utf8' });
}

const cli = (user, ...args) => JSON.parse(cliText(user, ...args));

function cliLogin(user) {
  const domain = user.split('@')[1];
  execFileSync(BIN, ['--json', '--config-dir', join(work, user), 'login', '--org', org(domain).profile, '--user', user, '--password-stdin'], {
    input: password(user),
  });
}

before(async () => {
  assert.ok(existsSync(BIN), `the custos binary is missing at ${BIN} (cargo build -p custos-cli)`);
  assert.ok(existsSync(CHROMIUM), `Chromium is missing at ${CHROMIUM} (apt-get install chromium)`);
  mkdirSync(SHOTS, { recursive: true });
  work = mkdtempSync(join(tmpdir(), 'custos-web-'));
  const base = await freeBase();
  up = spawn(BIN, ['--json', 'up', '--data-dir', join(work, 'data'), '--base-port', String(base)], { stdio: ['ignore', 'pipe', 'ignore'] });
  ready = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('custos up did not become ready')), 90_000);
    createInterface({ input: up.stdout }).on('line', (line) => {
      if (line.startsWith('{"ready"')) {
        clearTimeout(timer);
        ok(JSON.parse(line).ready);
      }
    });
    up.once('exit', (code) => fail(new Error(`custos up exited (${code})`)));
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--headless=new'] });
  cliLogin('alice@acme.test');
});

after(async () => {
  await browser?.close();
  up?.kill('SIGKILL');
  if (work) rmSync(work, { recursive: true, force: true });
});

async function signIn(user, viewport = { width: 1280, height: 800 }, setup = async () => {}) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  await setup(page);
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
  await page.goto(org(user.split('@')[1]).web_url);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // The org's identity provider's page.
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(password(user));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText(user, { exact: true }).waitFor();
  await page.getByRole('status', { name: 'Connection' }).filter({ hasText: 'live' }).waitFor();
  return { ctx, page, problems };
}

async function open(page, title) {
  await page.getByRole('navigation', { name: 'Spaces' }).getByRole('button', { name: new RegExp(title) }).click();
  return page.getByRole('log', { name: 'Messages' });
}

async function send(page, text) {
  await page.getByRole('textbox', { name: 'Message' }).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

test('alice, bob and dave of another org chat live in their browsers, and the CLI reads it all', async () => {
  const space = cli('alice@acme.test', 'space', 'create', 'Launch', '--member', 'bob@acme.test', '--member', 'dave@globex.test');
  cli('alice@acme.test', 'send', space.id, 'hello from the CLI');

  const alice = await signIn('alice@acme.test');
  const bob = await signIn('bob@acme.test');
  const dave = await signIn('dave@globex.test');
  for (const p of [alice, bob, dave]) {
    const log = await open(p.page, 'Launch');
    await log.getByText('hello from the CLI').waitFor();
  }
  await alice.page.screenshot({ path: join(SHOTS, 'web-alice-space.png') });

  await send(bob.page, 'Hi from Bob’s browser');
  await (await alice.page.getByRole('log', { name: 'Messages' })).getByText('Hi from Bob’s browser').waitFor();
  await dave.page.getByRole('log', { name: 'Messages' }).getByText('Hi from Bob’s browser').waitFor();
  await send(dave.page, 'Dave here, from globex');
  await alice.page.getByRole('log', { name: 'Messages' }).getByText('Dave here, from globex').waitFor();
  await bob.page.getByRole('log', { name: 'Messages' }).getByText('Dave here, from globex').waitFor();
  await bob.page.screenshot({ path: join(SHOTS, 'web-bob-live.png') });

  // What the browsers sent is what the CLI reads.
  const texts = cliText('alice@acme.test', 'read', space.id);
  assert.ok(texts.includes('Hi from Bob’s browser') && texts.includes('Dave here, from globex'), texts.slice(0, 500));

  // Message content is text, never markup.
  await send(alice.page, '<img src=x onerror=alert(1)> **bold**');
  const shown = bob.page.getByRole('log', { name: 'Messages' }).getByText('<img src=x onerror=alert(1)> **bold**');
  await shown.waitFor();
  assert.equal(await bob.page.locator('ol.timeline img').count(), 0);

  for (const p of [alice, bob, dave]) assert.deepEqual(p.problems, [], 'no errors on the page');
  for (const p of [alice, bob, dave]) await p.ctx.close();
});

test('a space made in the browser, with a member of another org, reaches the others live and the CLI', async () => {
  const alice = await signIn('alice@acme.test');
  const dave = await signIn('dave@globex.test');
  await alice.page.getByRole('textbox', { name: 'New space name' }).fill('Made in a browser');
  await alice.page.getByRole('textbox', { name: 'Members' }).fill('bob@acme.test, dave@globex.test');
  await alice.page.getByRole('button', { name: 'Create space' }).click();
  await alice.page.getByRole('log', { name: 'Messages' }).getByText('dave@globex.test joined').waitFor();
  await send(alice.page, 'first words in the new space');
  // Dave was not in it when his page loaded: it appears, and it reads.
  const log = await open(dave.page, 'Made in a browser');
  await log.getByText('first words in the new space').waitFor();
  await alice.page.screenshot({ path: join(SHOTS, 'web-created.png') });
  const listed = cliText('alice@acme.test', 'spaces');
  assert.ok(listed.includes('Made in a browser'), listed);
  assert.deepEqual([...alice.problems, ...dave.problems], []);
  await alice.ctx.close();
  await dave.ctx.close();
});

function sqlite(db, sql, ...params) {
  execFileSync('python3', ['-c', 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); c.execute(sys.argv[2], sys.argv[3:]); c.commit()', db, sql, ...params]);
}

test('what the core alters shows as unreadable, with the reason', async () => {
  const space = cli('alice@acme.test', 'space', 'create', 'Tampering', '--member', 'bob@acme.test');
  const sent = cli('alice@acme.test', 'send', space.id, 'the real plan');
  const forged = cli('alice@acme.test', 'send', space.id, 'second message');
  const db = join(work, 'data/core/core.db');
  // The provider re-attributes one message and corrupts another's ciphertext.
  sqlite(db, 'UPDATE core_events SET sender = ? WHERE space_id = ? AND seq = ?', 'mallory@acme.test', space.id, String(sent.seq));
  // One character of the ciphertext segment (before the 22-character tag) flipped.
  sqlite(db, "UPDATE core_events SET ciphertext = substr(ciphertext, 1, length(ciphertext) - 41) || (CASE substr(ciphertext, length(ciphertext) - 40, 1) WHEN 'A' THEN 'B' ELSE 'A' END) || substr(ciphertext, length(ciphertext) - 39) WHERE space_id = ? AND seq = ?", space.id, String(forged.seq));
  const bob = await signIn('bob@acme.test');
  const log = await open(bob.page, 'Tampering');
  await log.getByText(/^Unreadable: .*the core says mallory@acme.test sent this; the sealed content says alice@acme.test$/).waitFor();
  await log.getByText(/^Unreadable: .*decryption failed/).waitFor();
  assert.equal(await log.getByText('the real plan').count(), 0, 'a re-attributed message is not shown as mallory\'s');
  await bob.page.screenshot({ path: join(SHOTS, 'web-unreadable.png') });
  await bob.ctx.close();
});

test('a lost connection resumes without losing or repeating messages; a removed member reads nothing after', async () => {
  const space = cli('alice@acme.test', 'space', 'create', 'Resume', '--member', 'bob@acme.test');
  // The page's socket to the core goes through this proxy, which can cut it.
  const sockets = [];
  let refuse = false;
  const bob = await signIn('bob@acme.test', undefined, (page) =>
    page.routeWebSocket(/\/v1\/ws$/, (ws) => {
      if (refuse) return ws.close();
      ws.connectToServer();
      sockets.push(ws);
    }),
  );
  const log = await open(bob.page, 'Resume');
  await log.getByText('bob@acme.test joined').waitFor();
  refuse = true;
  for (const ws of sockets) await ws.close();
  await bob.page.getByRole('status', { name: 'Connection' }).filter({ hasText: 'reconnecting' }).waitFor();
  cli('alice@acme.test', 'send', space.id, 'sent while you were away');
  refuse = false;
  await log.getByText('sent while you were away').waitFor({ timeout: 30_000 });
  cli('alice@acme.test', 'send', space.id, 'and one more, live');
  await log.getByText('and one more, live').waitFor();
  assert.equal(await log.getByText('sent while you were away').count(), 1, 'delivered once');

  // Alice removes bob: his page shows it, and nothing sent afterwards reaches it.
  cliText('alice@acme.test', 'space', 'remove', space.id, 'bob@acme.test');
  await log.getByText('bob@acme.test left or was removed').waitFor();
  cli('alice@acme.test', 'send', space.id, 'after bob left');
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await log.getByText('after bob left').count(), 0);
  assert.deepEqual(bob.problems, []);
  await bob.ctx.close();
});

test('a reload signs in again from the encrypted refresh token; nothing readable is stored; logging out forgets it', async () => {
  const bob = await signIn('bob@acme.test');
  await (await open(bob.page, 'Launch')).getByText('hello from the CLI').waitFor();
  await bob.page.reload();
  await bob.page.getByText('bob@acme.test', { exact: true }).waitFor();
  assert.ok(!bob.page.url().includes('/authorize'), 'no trip to the identity provider');
  await (await open(bob.page, 'Launch')).getByText('hello from the CLI').waitFor();
  const kept = await bob.page.evaluate(async () => {
    const db = await new Promise((ok) => {
      const r = indexedDB.open('custos');
      r.onsuccess = () => ok(r.result);
    });
    const all = await new Promise((ok) => {
      const r = db.transaction('session').objectStore('session').getAll();
      r.onsuccess = () => ok(r.result);
    });
    db.close();
    let exported = 'refused';
    try {
      await crypto.subtle.exportKey('raw', all[0].key);
      exported = 'exported';
    } catch {}
    return {
      local: localStorage.length,
      session: sessionStorage.length,
      records: all.length,
      extractable: all[0].key.extractable,
      exported,
      stored: Array.from(new Uint8Array(all[0].data)).map((b) => String.fromCharCode(b)).join(''),
    };
  });
  assert.deepEqual([kept.local, kept.session, kept.records], [0, 0, 1], 'one record, in IndexedDB only');
  assert.equal(kept.extractable, false);
  assert.equal(kept.exported, 'refused', 'the key cannot be read by script');
  assert.ok(!kept.stored.includes('eyJ'), 'the refresh token (a JWT) is not stored readable');

  await bob.page.getByRole('button', { name: 'Log out' }).click();
  await bob.page.getByRole('button', { name: 'Sign in' }).waitFor();
  await bob.page.reload();
  await bob.page.getByRole('button', { name: 'Sign in' }).waitFor();
  assert.deepEqual(bob.problems, []);
  await bob.ctx.close();
});

test('a phone-sized screen shows the spaces and the timeline without overlap', async () => {
  const carol = await signIn('bob@acme.test', { width: 390, height: 844 });
  const log = await open(carol.page, 'Launch');
  await log.getByText('hello from the CLI').waitFor();
  const nav = await carol.page.getByRole('navigation', { name: 'Spaces' }).boundingBox();
  const composer = await carol.page.getByRole('form', { name: 'Send a message' }).boundingBox();
  assert.ok(nav && composer && nav.y + nav.height <= composer.y, 'the space list sits above the composer');
  assert.ok(composer.x >= 0 && composer.x + composer.width <= 390, 'the composer fits the screen');
  await carol.page.screenshot({ path: join(SHOTS, 'web-phone.png') });
  await carol.ctx.close();
});
