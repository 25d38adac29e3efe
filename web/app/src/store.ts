// What the browser keeps across reloads: the refresh token only, encrypted
// (AES-GCM) under a key WebCrypto generated non-extractable. The key object
// and the ciphertext sit in IndexedDB; the key's bytes never reach script,
// so a copy of the browser's files holds no usable token. Access tokens,
// the KMS session and content keys are never stored. Logging out deletes it all.
const DB = 'custos';
const STORE = 'session';

function idb(): Promise<IDBDatabase> {
  return new Promise((ok, fail) => {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE);
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
}

async function tx<T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await idb();
  try {
    return await new Promise<T>((ok, fail) => {
      const r = f(db.transaction(STORE, mode).objectStore(STORE));
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
  } finally {
    db.close();
  }
}

interface Sealed {
  key: CryptoKey;
  iv: Uint8Array<ArrayBuffer>;
  data: ArrayBuffer;
}

/** Keeps `refresh` for `org`, encrypted under a fresh non-extractable key. */
export async function keepRefreshToken(org: string, refresh: string): Promise<void> {
  const key = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const data = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: new TextEncoder().encode(org) }, key, new TextEncoder().encode(refresh));
  await tx('readwrite', (s) => s.put({ key, iv, data } satisfies Sealed, org));
}

/** The kept refresh token of `org`, or null (none, or it no longer opens). */
export async function keptRefreshToken(org: string): Promise<string | null> {
  try {
    const sealed = (await tx('readonly', (s) => s.get(org))) as Sealed | undefined;
    if (!sealed) return null;
    const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: sealed.iv, additionalData: new TextEncoder().encode(org) }, sealed.key, sealed.data);
    return new TextDecoder().decode(plain);
  } catch {
    await forget(org);
    return null;
  }
}

/** Deletes what is kept for `org`. */
export async function forget(org: string): Promise<void> {
  await tx('readwrite', (s) => s.delete(org));
}
