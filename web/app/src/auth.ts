// Signing in: the OAuth 2.0 authorization code flow with PKCE at the org's
// identity provider (any OIDC provider; oauth4webapi does the protocol), one
// single-audience token for the core and one for the KMS (RFC 8707).
//
// Access tokens live in memory only; the refresh token is kept encrypted
// (store.ts) so that a reload or a second tab signs in without the IdP.
// The PKCE verifier and state wait in sessionStorage during the redirect
// (this tab only) and are removed on return.
import * as oauth from 'oauth4webapi';
import type { OrgConfig } from './config';

export interface Tokens {
  core: string;
  kms: string;
  refresh: string;
  userHint: string;
}

const PENDING = 'custos.login';

function insecure(cfg: OrgConfig): Record<symbol, boolean> {
  // The development IdP of `custos up` is plain HTTP on loopback.
  const u = new URL(cfg.issuer);
  const loopback = u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname.endsWith('.localhost');
  return u.protocol === 'http:' && loopback ? { [oauth.allowInsecureRequests]: true } : {};
}

async function server(cfg: OrgConfig): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(cfg.issuer);
  const r = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure(cfg) });
  return oauth.processDiscoveryResponse(issuer, r);
}

function redirectUri(): string {
  return `${location.origin}/`;
}

/** Sends the browser to the IdP's sign-in page. */
export async function beginLogin(cfg: OrgConfig): Promise<never> {
  const as = await server(cfg);
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
  const url = new URL(as.authorization_endpoint!);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', cfg.clientId);
  url.searchParams.set('redirect_uri', redirectUri());
  url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
  url.searchParams.set('code_challenge_method', 'S256');
  url.searchParams.set('state', state);
  url.searchParams.set('resource', cfg.coreAudience);
  location.assign(url.href);
  return new Promise<never>(() => {});
}

/** Whether this page load is the IdP sending the user back. */
export function isCallback(): boolean {
  const q = new URLSearchParams(location.search);
  return sessionStorage.getItem(PENDING) !== null && (q.has('code') || q.has('error'));
}

async function tokenFor(cfg: OrgConfig, as: oauth.AuthorizationServer, refresh: string, resource: string) {
  const client: oauth.Client = { client_id: cfg.clientId };
  const r = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), refresh, {
    additionalParameters: { resource },
    ...insecure(cfg),
  });
  return oauth.processRefreshTokenResponse(as, client, r);
}

/** Signs in again from a kept refresh token: the core's and the KMS's tokens. */
export async function resume(cfg: OrgConfig, refresh: string): Promise<Tokens> {
  const as = await server(cfg);
  const core = await tokenFor(cfg, as, refresh, cfg.coreAudience);
  const next = core.refresh_token ?? refresh;
  const kms = await tokenFor(cfg, as, next, cfg.kmsAudience);
  return { core: core.access_token, kms: kms.access_token, refresh: kms.refresh_token ?? next, userHint: '' };
}

/** Completes the sign-in on return from the IdP: the core's and the KMS's tokens. */
export async function finishLogin(cfg: OrgConfig): Promise<Tokens> {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? '{}') as { verifier?: string; state?: string };
  sessionStorage.removeItem(PENDING);
  const here = new URL(location.href);
  history.replaceState(null, '', redirectUri());
  if (!pending.verifier || !pending.state) throw new Error('the sign-in was not started in this tab');
  const as = await server(cfg);
  const client: oauth.Client = { client_id: cfg.clientId };
  const params = oauth.validateAuthResponse(as, client, here, pending.state);
  const r = await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, redirectUri(), pending.verifier, {
    additionalParameters: { resource: cfg.coreAudience },
    ...insecure(cfg),
  });
  const core = await oauth.processAuthorizationCodeResponse(as, client, r);
  if (!core.refresh_token) throw new Error('the identity provider issued no refresh token');
  const kms = await tokenFor(cfg, as, core.refresh_token, cfg.kmsAudience);
  return { core: core.access_token, kms: kms.access_token, refresh: kms.refresh_token ?? core.refresh_token, userHint: '' };
}
