// Interop driver: reads one JSON command per line on stdin, answers one JSON
// line on stdout. It wraps Cisco's node-kms 0.4.1 and node-jose 2.2.0,
// unmodified, so that the Rust tests can play both ends against them.
"use strict";

const readline = require("readline");
const jose = require("node-jose");
const KMS = require("node-kms");

const b64u = jose.util.base64url;
const contexts = new Map();
let nextCtx = 1;

const ops = {
  // ---- node-kms as the client
  async kms_client_handshake({ serverJwk, clientInfo, uri }) {
    const ctx = new KMS.Context();
    ctx.clientInfo = clientInfo;
    ctx.serverInfo = { key: serverJwk };
    const local = await ctx.createECDHKey();
    ctx.ephemeralKey = local;
    // node-kms sends the whole local key, private `d` included.
    const req = new KMS.Request({ method: "create", uri: uri || "/ecdhe", jwk: local.jwk });
    const wrapped = await req.wrap(ctx, { serverKey: true });
    const id = nextCtx++;
    contexts.set(id, ctx);
    return { ctx: id, wrapped, requestId: req.requestId, sentPrivateD: "d" in local.jwk };
  },
  async kms_client_finish({ ctx: id, response }) {
    const ctx = contexts.get(id);
    const res = new KMS.Response(response);
    const body = await res.unwrap(ctx);
    if (body.status !== 201) {
      return { body };
    }
    const shared = await ctx.deriveEphemeralKey(body.key);
    ctx.ephemeralKey = shared;
    return { body, sharedKey: shared.jwk.k, kid: shared.jwk.kid };
  },
  async kms_client_wrap({ ctx: id, request }) {
    const ctx = contexts.get(id);
    const req = new KMS.Request(request);
    const wrapped = await req.wrap(ctx);
    return { wrapped, requestId: req.requestId };
  },
  async kms_client_unwrap({ ctx: id, response }) {
    const ctx = contexts.get(id);
    const res = new KMS.Response(response);
    const body = await res.unwrap(ctx);
    return { body };
  },

  // ---- node-kms over HTTP against a running KMS (POST /kms/messages)
  async idp_token({ tokenEndpoint, sub, aud, expiresIn, clientId, typ }) {
    const form = new URLSearchParams({ grant_type: "client_credentials", client_id: clientId || "custos-test", sub, aud });
    if (expiresIn !== undefined) form.set("expires_in", String(expiresIn));
    if (typ) form.set("typ", typ);
    const res = await fetch(tokenEndpoint, { method: "POST", body: form });
    if (!res.ok) throw new Error("token endpoint answered " + res.status);
    return { token: (await res.json()).access_token };
  },
  async kms_http_connect({ url, token, clientId, userId }) {
    const info = await (await fetch(url + "/kms/info")).json();
    const ctx = new KMS.Context();
    ctx.clientInfo = { clientId, credential: { userId: userId || "", bearer: token } };
    ctx.serverInfo = { key: info.key };
    ctx.ephemeralKey = await ctx.createECDHKey();
    const req = new KMS.Request({ method: "create", uri: info.uri + "/ecdhe", jwk: ctx.ephemeralKey.jwk });
    const wrapped = await req.wrap(ctx, { serverKey: true });
    const answer = await postJose(url, wrapped);
    const body = await new KMS.Response(answer).unwrap(ctx);
    const id = nextCtx++;
    contexts.set(id, ctx);
    if (body.status !== 201) {
      return { ctx: id, body };
    }
    ctx.ephemeralKey = await ctx.deriveEphemeralKey(body.key);
    return { ctx: id, body, kid: ctx.ephemeralKey.jwk.kid, uri: info.uri };
  },
  async kms_http_request({ url, ctx: id, request, token, batch }) {
    const ctx = contexts.get(id);
    if (token) ctx.clientInfo = Object.assign({}, ctx.clientInfo, { credential: Object.assign({}, ctx.clientInfo.credential, { bearer: token }) });
    const req = new KMS.Request(request);
    const wrapped = await req.wrap(ctx);
    let answer;
    if (batch) {
      const res = await fetch(url + "/kms/messages", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ kmsMessages: [wrapped] }) });
      if (!res.ok) throw new Error("KMS answered HTTP " + res.status);
      answer = (await res.json()).kmsMessages[0];
    } else {
      answer = await postJose(url, wrapped);
    }
    const body = await new KMS.Response(answer).unwrap(ctx);
    return { body, requestId: req.requestId, wrapped };
  },
  async kms_http_replay({ url, ctx: id, wrapped }) {
    const ctx = contexts.get(id);
    const body = await new KMS.Response(await postJose(url, wrapped)).unwrap(ctx);
    return { body };
  },

  // ---- node-jose primitives
  async generate({ kty, size, crv, kid }) {
    const ks = jose.JWK.createKeyStore();
    const key = await ks.generate(kty, kty === "EC" ? crv || "P-256" : size, kid ? { kid } : {});
    const out = { private: key.toJSON(true), public: key.toJSON(false) };
    if (kty !== "oct") {
      out.privatePem = key.toPEM(true);
      out.publicPem = key.toPEM(false);
    }
    return out;
  },
  async from_pem({ pem }) {
    const key = await jose.JWK.asKey(pem, "pem");
    const priv = key.has("d", true);
    return { jwk: key.toJSON(priv), hasPrivate: priv };
  },
  async jwe_encrypt({ jwk, plaintext, alg, kid }) {
    const key = await jose.JWK.asKey(jwk);
    const fields = {};
    if (alg) fields.alg = alg;
    if (kid) fields.kid = kid;
    const enc = jose.JWE.createEncrypt({ format: "compact", contentAlg: "A256GCM", fields }, key);
    return { compact: await enc.update(Buffer.from(plaintext, "base64")).final() };
  },
  async jwe_decrypt({ jwk, compact }) {
    const key = await jose.JWK.asKey(jwk);
    const res = await jose.JWE.createDecrypt(key).decrypt(compact);
    return { header: res.header, plaintext: res.plaintext.toString("base64") };
  },
  async jws_sign({ jwk, alg, payload, typ, kid }) {
    const key = await jose.JWK.asKey(jwk);
    const fields = { alg };
    if (typ) fields.typ = typ;
    if (kid) fields.kid = kid;
    const sig = jose.JWS.createSign({ format: "compact", fields }, { key, reference: false });
    return { compact: await sig.update(Buffer.from(payload, "base64")).final() };
  },
  async jws_verify({ jwk, compact }) {
    const key = await jose.JWK.asKey(jwk);
    const res = await jose.JWS.createVerify(key).verify(compact);
    return { header: res.header, payload: res.payload.toString("base64") };
  },
  async ecdh_hkdf({ privateJwk, publicJwk }) {
    const priv = await jose.JWK.asKey(privateJwk);
    const pub = await jose.JWK.asKey(publicJwk);
    const out = await jose.JWA.derive("ECDH-HKDF", priv.toObject(true), { public: pub.toObject() });
    return { key: b64u.encode(out) };
  },
};

async function postJose(url, compact) {
  const res = await fetch(url + "/kms/messages", { method: "POST", headers: { "content-type": "application/jose" }, body: compact });
  if (!res.ok) throw new Error("KMS answered HTTP " + res.status);
  return await res.text();
}

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on("line", async (line) => {
  let reply;
  try {
    const cmd = JSON.parse(line);
    const fn = ops[cmd.op];
    if (!fn) throw new Error("unknown op " + cmd.op);
    reply = { ok: await fn(cmd) };
  } catch (err) {
    reply = { err: String((err && err.message) || err) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});
