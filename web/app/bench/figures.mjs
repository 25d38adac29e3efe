// The web client's figures (issue 15, deliverable 6), printed, not asserted:
//   - the wasm module's size, raw and gzipped;
//   - time from submitting the IdP's sign-in form to the first decrypted
//     message on screen;
//   - file encryption by the wasm engine (FileEncryptor, 64 KiB segments) in
//     MB/s, run by Node's V8 (the engine Chromium runs wasm with) on
//     target/wasm/pkg-node, next to the native filecrypt's seal_65536 from
//     `cargo bench -p filecrypt` in the same run.
// Not measured yet: opening a space with 10,000 messages.
//
// Run: node web/app/bench/figures.mjs   (after scripts/wasm build and cargo build -p custos-cli; needs Chromium)
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '../../..');
const BIN = process.env.CUSTOS_BIN ?? join(root, 'target/debug/custos');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const wasm = readFileSync(join(root, 'web/dist/assets/web_bg.wasm'));
console.log(`wasm module: ${wasm.length} bytes raw, ${gzipSync(wasm, { level: 9 }).length} gzipped`);

const work = mkdtempSync(join(tmpdir(), 'custos-figures-'));
const base = 30000 + Math.floor(Math.random() * 20000);
const up = spawn(BIN, ['--json', 'up', '--data-dir', join(work, 'data'), '--base-port', String(base)], { stdio: ['ignore', 'pipe', 'ignore'] });
const ready = await new Promise((ok) =>
  createInterface({ input: up.stdout }).on('line', (l) => l.startsWith('{"ready"') && ok(JSON.parse(l).ready)),
);
const acme = ready.orgs.find((o) => o.domain === 'acme.test');
const pw = Object.fromEntries(acme.users);
const cli = (...a) => execFileSync(BIN, ['--json', '--config-dir', join(work, 'alice'), ...a], { encoding: 'utf8' });
execFileSync(BIN, ['--json', '--config-dir', join(work, 'alice'), 'login', '--org', acme.profile, '--user', 'alice@acme.test', '--password-stdin'], { input: pw['alice@acme.test'] });
const space = JSON.parse(cli('space', 'create', 'Figures', '--member', 'bob@acme.test'));
cli('send', space.id, 'the first message');

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--headless=new'] });
const page = await (await browser.newContext()).newPage();
await page.goto(acme.web_url);
await page.getByRole('button', { name: 'Sign in' }).click();
await page.getByLabel('Username').fill('bob@acme.test');
await page.getByLabel('Password').fill(pw['bob@acme.test']);
const t0 = Date.now();
await page.getByRole('button', { name: 'Sign in' }).click();
await page.getByRole('navigation', { name: 'Spaces' }).getByRole('button', { name: /Figures/ }).click();
await page.getByRole('log', { name: 'Messages' }).getByText('the first message').waitFor();
console.log(`sign-in form submitted to the first decrypted message on screen: ${Date.now() - t0} ms (debug servers)`);

await browser.close();
up.kill('SIGKILL');
rmSync(work, { recursive: true, force: true });

const { createRequire } = await import('node:module');
const web = createRequire(import.meta.url)(join(root, 'target/wasm/pkg-node/web.js'));
const segment = 65536;
const total = 64 * 1024 * 1024;
const plain = new Uint8Array(segment).fill(7);
const enc = new web.FileEncryptor(segment);
const start = performance.now();
for (let done = 0; done < total; done += segment) enc.seal(plain, done + segment >= total);
const wasmMBps = total / 1e6 / ((performance.now() - start) / 1000);
const bench = execFileSync('cargo', ['bench', '-p', 'filecrypt', '--bench', 'filecrypt', '--', 'seal_65536', '--warm-up-time', '1', '--measurement-time', '3', '--noplot'], {
  cwd: root,
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'ignore'],
});
const m = bench.match(/thrpt:\s+\[[^\]]*?([\d.]+) (GiB|MiB)\/s [\d.]+ (?:GiB|MiB)\/s\]/);
const nativeMBps = m ? Number(m[1]) * (m[2] === 'GiB' ? 1073.741824 : 1.048576) : NaN;
console.log(`file encryption: wasm ${wasmMBps.toFixed(0)} MB/s, native filecrypt ${nativeMBps.toFixed(0)} MB/s (ratio ${(wasmMBps / nativeMBps).toFixed(3)})`);
