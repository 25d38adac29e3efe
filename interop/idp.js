// A real OpenID provider on loopback for tests: npm `oauth2-mock-server`
// (unmodified), made to issue RFC 9068 access tokens.
//
//   node interop/idp.js [port]          (port 0 or absent: any free port)
//
// Prints one JSON line on stdout once listening:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT,"token_endpoint":"...","algs":[...]}
// Discovery is at {issuer}/.well-known/openid-configuration, keys at {issuer}/jwks.
//
// Get a token (client_credentials; form fields below are all optional):
//   curl -s -d grant_type=client_credentials -d client_id=app -d sub=alice \
//        -d aud=kms://kms.example.com -d scope='kms.read kms.write' \
//        http://127.0.0.1:PORT/token
//   -> {"access_token":"eyJ...","token_type":"Bearer","expires_in":3600,...}
//
//   sub         the token's sub (default: the client_id)
//   aud         audience; repeat the field for an array
//   client_id   the token's client_id (default "custos-test")
//   scope       space-separated scopes
//   expires_in  lifetime in seconds from now; negative gives an expired token
//   typ         header typ (default "at+jwt"; e.g. "JWT" for negative tests)
//
// The IdP holds one RS256, one PS256 and one ES256 key and signs successive
// tokens with them in turn, each token naming its key by `kid`.
//
// It exits on SIGINT/SIGTERM, and when its stdin is a pipe that closes, so a
// test that spawns it with a piped stdin never leaves it behind.
"use strict";

const fs = require("fs");
const { randomUUID } = require("crypto");

async function main() {
  const arg = process.argv[2];
  const port = arg === undefined ? 0 : Number(arg);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`usage: node idp.js [port]; got ${JSON.stringify(arg)}`);
  }
  // oauth2-mock-server is an ES module; this file stays CommonJS like driver.js.
  const { OAuth2Server } = await import("oauth2-mock-server");
  const server = new OAuth2Server();
  const algs = ["RS256", "PS256", "ES256"];
  for (const alg of algs) {
    await server.issuer.keys.generate(alg);
  }

  server.service.on("beforeTokenSigning", (token, req) => {
    const body = req.body || {};
    const clientId = typeof body.client_id === "string" ? body.client_id : "custos-test";
    token.header.typ = typeof body.typ === "string" ? body.typ : "at+jwt";
    // RFC 9068 section 2.2: iss, exp, aud, sub, client_id, iat, jti.
    token.payload.client_id = clientId;
    token.payload.sub = typeof body.sub === "string" ? body.sub : clientId;
    token.payload.jti = randomUUID();
    if (body.expires_in !== undefined) {
      const ttl = Number(body.expires_in);
      if (!Number.isFinite(ttl)) throw new Error("expires_in must be a number");
      token.payload.exp = token.payload.iat + Math.trunc(ttl);
      // Keep nbf before exp so an expired token is expired, not "not yet valid".
      token.payload.nbf = Math.min(token.payload.nbf, token.payload.exp - 1);
    }
    if (token.payload.scope === undefined) delete token.payload.scope;
    if (token.payload.aud === undefined) delete token.payload.aud;
  });

  await server.start(port, "127.0.0.1");
  const actualPort = server.address().port;
  // The library would say "localhost"; name the address we actually bound.
  server.issuer.url = `http://127.0.0.1:${actualPort}`;

  const stop = () => {
    server.stop().finally(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  if (fs.fstatSync(0).isFIFO()) {
    process.stdin.on("end", stop);
    process.stdin.on("error", stop);
    process.stdin.resume();
  }

  process.stdout.write(
    JSON.stringify({
      issuer: server.issuer.url,
      port: actualPort,
      token_endpoint: `${server.issuer.url}/token`,
      algs,
    }) + "\n",
  );
}

main().catch((err) => {
  process.stderr.write(`idp.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
