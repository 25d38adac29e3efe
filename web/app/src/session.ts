// A signed-in session: the core's API, the KMS channel through the core's
// relay, and the SDK's Rust engine (wasm) for every decision about what is
// safe: the pinned KMS key, handshakes and resets, opening events with all
// their checks, sealing. This file moves bytes and keeps caches; it decides
// nothing the engine decides.
import init, * as engine from './wasm/web.js';
import type { OrgConfig } from './config';
import { resume, type Tokens } from './auth';
import { keepRefreshToken } from './store';

export interface Space {
  id: string;
  resource: string;
  title: string | null;
  titleError: string | null;
  lastSeq: number;
  readSeq: number;
}

export interface Message {
  spaceId: string;
  seq: number;
  id: string;
  sender: string;
  storedAt: number;
  parent: string | null;
  target: string | null;
  content: { type: string; text?: string; emoji?: string; title?: string; user?: string; reason?: string };
}

let ready: Promise<unknown> | null = null;
export function loadEngine(): Promise<unknown> {
  ready ??= init();
  return ready;
}

export class Session {
  private channel: engine.KmsChannel;
  private timeline = new engine.Timeline();
  private keys = new Map<string, engine.Key>();
  private refusals = new Map<string, string>();
  private spaces = new Map<string, Space>();
  userId = '';

  constructor(
    readonly cfg: OrgConfig,
    private tokens: Tokens,
  ) {
    this.channel = new engine.KmsChannel(cfg.kmsDomain, cfg.kmsKey);
  }

  /** New access tokens from the refresh token (they expire while the page stays open). */
  private async renew(): Promise<void> {
    this.tokens = await resume(this.cfg, this.tokens.refresh);
    await keepRefreshToken(this.cfg.org, this.tokens.refresh);
  }

  async core<T>(method: string, path: string, body?: unknown, renewed = false): Promise<T> {
    const r = await fetch(`${this.cfg.coreUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.tokens.core}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (r.status === 401 && !renewed) {
      await this.renew();
      return this.core(method, path, body, true);
    }
    const text = await r.text();
    if (!r.ok) {
      let why = `HTTP ${r.status}`;
      try {
        const e = JSON.parse(text);
        why = e.message ?? e.error ?? why;
      } catch {
        /* not JSON */
      }
      throw new Error(`the core refused: ${why}`);
    }
    return JSON.parse(text) as T;
  }

  private async relay(message: string, renewed = false): Promise<string> {
    const r = await fetch(`${this.cfg.coreUrl}/kms/${encodeURIComponent(this.cfg.kmsDomain)}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.tokens.core}`, 'content-type': 'application/jose' },
      body: message,
    });
    if (r.status === 401 && !renewed) {
      await this.renew();
      return this.relay(message, true);
    }
    const text = await r.text();
    if (r.status === 429) throw new Error('the KMS is busy: try again in a moment');
    if (r.status >= 500 && !text.includes('.')) throw new Error(`the org's KMS cannot be reached (HTTP ${r.status})`);
    return text;
  }

  private async handshake(): Promise<void> {
    const hello = this.channel.beginHandshake(this.tokens.kms, `web-${crypto.randomUUID()}`);
    this.channel.finishHandshake(await this.relay(hello), Date.now());
  }

  /** One KMS request: handshakes first if needed, and once again after a genuine reset. */
  async kms(method: string, uri: string, body: unknown = {}): Promise<any> {
    let renewed = false;
    for (let attempt = 0; ; attempt++) {
      if (!this.channel.sessionUri) await this.handshake();
      const sent = JSON.parse(this.channel.wrap(method, uri, JSON.stringify(body), this.tokens.kms, Date.now()));
      try {
        const resp = JSON.parse(this.channel.unwrap(await this.relay(sent.message), sent.requestId, Date.now()));
        if (resp.status === 401 && !renewed) {
          // The KMS token expired: once, with fresh tokens.
          renewed = true;
          await this.renew();
          continue;
        }
        if (resp.status >= 400) throw new KmsRefusal(resp.status, resp.reason ?? 'refused');
        return resp;
      } catch (e) {
        if (attempt === 0 && e instanceof Error && e.message.startsWith('reset:')) continue;
        throw e;
      }
    }
  }

  async open(): Promise<void> {
    await loadEngine();
    const me = await this.core<{ user_id: string }>('GET', '/v1/me');
    this.userId = me.user_id;
    await this.handshake();
  }

  private async key(uri: string): Promise<engine.Key> {
    const cached = this.keys.get(uri);
    if (cached) return cached;
    const refused = this.refusals.get(uri);
    if (refused) throw new Error(refused);
    try {
      const resp = await this.kms('retrieve', uri);
      const key = engine.Key.fromKms(JSON.stringify(resp.key));
      this.keys.set(uri, key);
      return key;
    } catch (e) {
      const why = e instanceof KmsRefusal ? `your org's KMS refused the key: ${e.reason}` : String((e as Error).message ?? e);
      if (e instanceof KmsRefusal) this.refusals.set(uri, why);
      throw new Error(why);
    }
  }

  async listSpaces(): Promise<Space[]> {
    const r = await this.core<{ spaces: { space: any; role: string; read_seq: number }[] }>('GET', '/v1/spaces');
    const out: Space[] = [];
    for (const s of r.spaces) {
      const sp: Space = { id: s.space.id, resource: s.space.resource_uri, title: null, titleError: null, lastSeq: s.space.last_seq, readSeq: s.read_seq };
      try {
        if (!s.space.title) throw new Error('the space has no sealed title');
        const key = await this.key(engine.sealedKeyUri(s.space.title));
        sp.title = engine.openSpaceTitle(key, s.space.title, sp.resource);
      } catch (e) {
        sp.titleError = String((e as Error).message ?? e);
      }
      this.spaces.set(sp.id, sp);
      out.push(sp);
    }
    return out;
  }

  /** Opens one core event through the engine: its checks decide what is shown. */
  async decrypt(event: any): Promise<Message> {
    // A space joined since the list was read: learn its resource first.
    if (!this.spaces.has(event.space_id)) await this.listSpaces();
    const space = this.spaces.get(event.space_id);
    const resource = space?.resource ?? '';
    const json = JSON.stringify(event);
    const uri = engine.Timeline.keyUriOf(json);
    if (!uri) return JSON.parse(this.timeline.openWithoutKey(undefined, resource, json));
    try {
      const key = await this.key(uri);
      return JSON.parse(this.timeline.open(key, resource, json));
    } catch (e) {
      return JSON.parse(this.timeline.openWithoutKey(String((e as Error).message ?? e), resource, json));
    }
  }

  async history(spaceId: string, limit = 100): Promise<Message[]> {
    const space = this.spaces.get(spaceId);
    const after = Math.max(0, (space?.lastSeq ?? 0) - limit);
    const r = await this.core<{ events: any[] }>('GET', `/v1/spaces/${encodeURIComponent(spaceId)}/events?after=${after}&limit=${limit}`);
    const out: Message[] = [];
    for (const e of r.events) out.push(await this.decrypt(e));
    return out;
  }

  /** Creates a space: a fresh key and a resource at the KMS (members
   *  authorized there), the title sealed under it, then the space and its
   *  members at the core. Returns the new space's id. */
  async createSpace(title: string, members: string[]): Promise<string> {
    const others = [...new Set(members.map((m) => m.trim()).filter((m) => m && m !== this.userId))];
    const created = await this.kms('create', '/keys', { count: 1 });
    const key = engine.Key.fromKms(JSON.stringify(created.keys?.[0]));
    const res = await this.kms('create', '/resources', { authIds: others, keyUris: [key.uri] });
    const resource = res.resource?.uri;
    if (typeof resource !== 'string') throw new Error('the KMS answered without the resource');
    const sealed = engine.sealSpaceTitle(key, resource, this.userId, Date.now(), title);
    const space = await this.core<{ id: string }>('POST', '/v1/spaces', {
      resource_uri: resource,
      title: { ciphertext: sealed, key_uri: key.uri },
    });
    for (const m of others) {
      await this.core('POST', `/v1/spaces/${encodeURIComponent(space.id)}/members`, { user_id: m, role: 'member' });
    }
    return space.id;
  }

  async send(spaceId: string, text: string, parent?: string): Promise<Message> {
    const space = this.spaces.get(spaceId);
    if (!space) throw new Error('unknown space');
    const answer = await this.kms('retrieve', `${space.resource}/keys`, { count: 1 });
    const key = engine.Key.newestFromKms(JSON.stringify(answer), space.resource);
    this.keys.set(key.uri, key);
    const id = crypto.randomUUID();
    const sealed = engine.sealEvent(key, this.userId, Date.now(), 'message', id, parent, undefined, text);
    const e = await this.core<any>('POST', `/v1/spaces/${encodeURIComponent(spaceId)}/events`, {
      kind: 'message',
      client_event_id: id,
      ...(parent ? { parent } : {}),
      sealed: { ciphertext: sealed, key_uri: key.uri },
    });
    return this.decrypt(e);
  }

  /** The spaces as last listed. */
  known(): Space[] {
    return [...this.spaces.values()];
  }

  /** The live stream of every space: each event opened, then `onMessage`. Reconnects by itself. */
  live(onMessage: (m: Message) => void, onState: (s: string) => void): () => void {
    let stopped = false;
    let socket: WebSocket | null = null;
    let delay = 500;
    const since: Record<string, number> = {};
    for (const s of this.spaces.values()) since[s.id] = s.lastSeq;
    const connect = () => {
      if (stopped) return;
      socket = new WebSocket(`${this.cfg.coreUrl.replace(/^http/, 'ws')}/v1/ws`);
      socket.onopen = () => socket!.send(JSON.stringify({ type: 'hello', token: this.tokens.core, since }));
      socket.onmessage = async (ev) => {
        const f = JSON.parse(String(ev.data));
        if (f.type === 'ready') {
          delay = 500;
          onState('live');
        } else if (f.type === 'event') {
          const seq = f.event.seq as number;
          if ((since[f.event.space_id] ?? 0) >= seq) return;
          since[f.event.space_id] = seq;
          const sp = this.spaces.get(f.event.space_id);
          if (sp) sp.lastSeq = Math.max(sp.lastSeq, seq);
          onMessage(await this.decrypt(f.event));
        }
      };
      socket.onclose = () => {
        if (stopped) return;
        onState('reconnecting');
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10_000);
      };
    };
    connect();
    return () => {
      stopped = true;
      socket?.close();
    };
  }

  /** Forgets every key and token this session holds (wasm memory is freed). */
  close(): void {
    for (const k of this.keys.values()) k.free();
    this.keys.clear();
    this.channel.free();
    this.timeline.free();
    this.tokens = { core: '', kms: '', refresh: '', userHint: '' };
  }
}

export class KmsRefusal extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
  ) {
    super(`the KMS refused (${status}): ${reason}`);
  }
}
