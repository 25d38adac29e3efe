// Subresource Integrity for the built bundle: every script and stylesheet
// index.html loads gets an `integrity` (SHA-384) and `crossorigin`, and the
// hashes are written to dist/integrity.json (what the web host and the test
// that checks the kept bundle read).
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const dist = process.argv[2] ?? 'dist';
const sri = (file) => `sha384-${createHash('sha384').update(readFileSync(join(dist, file))).digest('base64')}`;
let html = readFileSync(join(dist, 'index.html'), 'utf8');
html = html.replace(/<(script|link)\b([^>]*?)\s(src|href)="\.\/([^"]+)"([^>]*)>/g, (tag, name, before, attr, path, after) => {
  if (/integrity=/.test(tag)) return tag;
  const cross = /crossorigin/.test(tag) ? '' : ' crossorigin';
  return `<${name}${before} ${attr}="./${path}"${after} integrity="${sri(path)}"${cross}>`;
});
if (/<script(?![^>]*\bsrc=)[^>]*>/.test(html)) throw new Error('index.html has an inline script: the CSP forbids it');
writeFileSync(join(dist, 'index.html'), html);

const files = {};
const walk = (d) => {
  for (const f of readdirSync(d)) {
    const p = join(d, f);
    if (statSync(p).isDirectory()) walk(p);
    else files[relative(dist, p)] = sri(relative(dist, p));
  }
};
walk(dist);
delete files['integrity.json'];
writeFileSync(join(dist, 'integrity.json'), JSON.stringify(files, null, 2) + '\n');
console.log(`sri: ${Object.keys(files).length} files hashed`);
