// The org's settings, served beside the app by the org's own web host
// (never by the provider): where to sign in, the core, and the KMS key to pin.
export interface OrgConfig {
  org: string;
  issuer: string;
  clientId: string;
  coreUrl: string;
  coreAudience: string;
  kmsDomain: string;
  kmsAudience: string;
  /** The KMS's static public key (JWK JSON), pinned: the channel trusts no other. */
  kmsKey: string;
}

export async function loadConfig(): Promise<OrgConfig> {
  const r = await fetch('./config.json', { cache: 'no-store' });
  if (!r.ok) throw new Error(`the org's settings could not be read (HTTP ${r.status})`);
  const c = (await r.json()) as Partial<OrgConfig>;
  for (const k of ['org', 'issuer', 'clientId', 'coreUrl', 'coreAudience', 'kmsDomain', 'kmsAudience', 'kmsKey'] as const) {
    if (typeof c[k] !== 'string' || !c[k]) throw new Error(`the org's settings lack ${k}`);
  }
  return c as OrgConfig;
}
