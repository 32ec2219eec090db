import { createHash, randomBytes } from 'node:crypto';
import { assertHeaderValue } from './header-check.js';

/**
 * SIP digest authentication, client side (RFC 3261 §22, RFC 2617, RFC 8760): answering the
 * WWW-Authenticate (401) / Proxy-Authenticate (407) challenges a carrier sends to our REGISTER and
 * INVITE. Keeps the last challenge so later requests reuse its nonce with an increasing nonce
 * count (`nc`) instead of being challenged every time (what registrars such as Kamailio and
 * carrier SBCs expect on refreshes). Hand-written: no maintained npm package does SIP digest
 * (HTTP digest libraries assume HTTP's request-uri and no 407).
 */
export interface DigestClientCredentials {
  username: string;
  password: string;
  /** When set, only challenges for this realm are answered (a different realm is not our account). */
  realm?: string;
}

export interface DigestChallenge {
  /** `www-authenticate` (401) or `proxy-authenticate` (407). */
  header: 'www-authenticate' | 'proxy-authenticate';
  realm: string;
  nonce: string;
  opaque: string | undefined;
  algorithm: 'MD5' | 'MD5-sess' | 'SHA-256' | 'SHA-256-sess';
  /** The qop we answer with (auth preferred over auth-int), or none for RFC 2069 servers. */
  qop: 'auth' | 'auth-int' | undefined;
  stale: boolean;
}

const ALGORITHMS = new Set(['MD5', 'MD5-SESS', 'SHA-256', 'SHA-256-SESS']);

/** Auth-params as `name=value` pairs separated by commas; quoted values may hold `,` `;` and `\"`. */
export function parseAuthParams(s: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  const re = /\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)/y;
  let at = 0;
  while (at < s.length) {
    re.lastIndex = at;
    const m = re.exec(s);
    if (!m || m[0].length === 0) return undefined;
    out[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
    at = re.lastIndex;
  }
  return out;
}

/** One WWW-/Proxy-Authenticate value, or undefined when it is not a usable Digest challenge. */
export function parseChallenge(
  value: string,
  header: DigestChallenge['header'] = 'www-authenticate',
): DigestChallenge | undefined {
  const m = /^\s*Digest\s+(.*)$/is.exec(value);
  if (!m) return undefined;
  const p = parseAuthParams(m[1]!);
  if (!p || p.realm === undefined || !p.nonce) return undefined;
  const alg = (p.algorithm ?? 'MD5').toUpperCase();
  if (!ALGORITHMS.has(alg)) return undefined;
  const qops = (p.qop ?? '').split(',').map((q) => q.trim().toLowerCase());
  const qop = qops.includes('auth') ? 'auth' : qops.includes('auth-int') ? 'auth-int' : undefined;
  if (p.qop !== undefined && !qop) return undefined; // only unknown qops offered
  // Values the server gave us go back into a header: refuse anything that could split it.
  for (const v of [p.realm, p.nonce, p.opaque ?? '']) if (/[\r\n"\\]/.test(v)) return undefined;
  return {
    header,
    realm: p.realm,
    nonce: p.nonce,
    opaque: p.opaque,
    algorithm: (alg === 'MD5-SESS' ? 'MD5-sess' : alg === 'SHA-256-SESS' ? 'SHA-256-sess' : alg) as 'MD5' | 'SHA-256',
    qop,
    stale: (p.stale ?? '').toLowerCase() === 'true',
  };
}

const hashOf = (alg: DigestChallenge['algorithm']) => (s: string) =>
  createHash(alg.startsWith('SHA-256') ? 'sha256' : 'md5')
    .update(s)
    .digest('hex');

/** The Authorization / Proxy-Authorization value for one request (RFC 2617 §3.2.2). */
export function authorization(
  ch: DigestChallenge,
  creds: DigestClientCredentials,
  method: string,
  uri: string,
  nc: number,
  cnonce: string,
  body = '',
): string {
  const H = hashOf(ch.algorithm);
  let ha1 = H(`${creds.username}:${ch.realm}:${creds.password}`);
  if (ch.algorithm.endsWith('-sess')) ha1 = H(`${ha1}:${ch.nonce}:${cnonce}`);
  const ha2 = ch.qop === 'auth-int' ? H(`${method}:${uri}:${H(body)}`) : H(`${method}:${uri}`);
  const ncHex = nc.toString(16).padStart(8, '0');
  const response = ch.qop
    ? H(`${ha1}:${ch.nonce}:${ncHex}:${cnonce}:${ch.qop}:${ha2}`)
    : H(`${ha1}:${ch.nonce}:${ha2}`);
  const parts = [
    `username="${creds.username}"`,
    `realm="${ch.realm}"`,
    `nonce="${ch.nonce}"`,
    `uri="${uri}"`,
    `response="${response}"`,
    `algorithm=${ch.algorithm}`,
  ];
  if (ch.opaque !== undefined) parts.push(`opaque="${ch.opaque}"`);
  if (ch.qop) parts.push(`qop=${ch.qop}`, `nc=${ncHex}`, `cnonce="${cnonce}"`);
  return `Digest ${parts.join(', ')}`;
}

export type ChallengeVerdict =
  { ok: true } | { ok: false; why: 'no_challenge' | 'realm_mismatch' | 'rejected' | 'unsupported' };

/**
 * Digest state for one account toward one server: the current challenge, its nonce count and
 * cnonce. `onChallenge` decides whether a 401/407 is worth answering (see there).
 */
export class DigestSession {
  private challenge: DigestChallenge | undefined;
  private nc = 0;
  private cnonce = randomBytes(8).toString('hex');

  constructor(private readonly creds: DigestClientCredentials) {
    assertHeaderValue(creds.username, 'digest username', /["\\]/);
    if (creds.realm !== undefined) assertHeaderValue(creds.realm, 'digest realm', /["\\]/);
  }

  /**
   * Take the challenge(s) of a 401/407 response; not ok when answering would be pointless.
   * `retried`: this request already carried credentials answering a challenge received for it, so a
   * new challenge without `stale=true` means they were refused (one retry per challenge, no loop).
   * Credentials sent pre-emptively from an older nonce do not count: their nonce may simply be old.
   */
  onChallenge(status: number, headers: { getAll(name: string): string[] }, retried: boolean): ChallengeVerdict {
    const name = status === 407 ? 'proxy-authenticate' : 'www-authenticate';
    const values = headers.getAll(name);
    if (!values.length) return { ok: false, why: 'no_challenge' };
    const parsed = values.map((v) => parseChallenge(v, name)).filter((c): c is DigestChallenge => !!c);
    if (!parsed.length) return { ok: false, why: 'unsupported' };
    const mine = this.creds.realm ? parsed.filter((c) => c.realm === this.creds.realm) : parsed;
    if (!mine.length) return { ok: false, why: 'realm_mismatch' };
    // Prefer SHA-256 when offered alongside MD5 (RFC 8760 §2.4: the client uses the first it supports).
    const ch = mine.find((c) => c.algorithm.startsWith('SHA-256')) ?? mine[0]!;
    if (retried && !ch.stale) {
      this.reset();
      return { ok: false, why: 'rejected' };
    }
    this.challenge = ch;
    this.nc = 0;
    this.cnonce = randomBytes(8).toString('hex');
    return { ok: true };
  }

  /** Whether a challenge is held (requests can carry credentials pre-emptively). */
  get ready(): boolean {
    return !!this.challenge;
  }

  /** Forget the nonce (e.g. the server restarted, or the account changed). */
  reset(): void {
    this.challenge = undefined;
    this.nc = 0;
  }

  /** The header to add to the next request, with the next nonce count; undefined before any challenge. */
  authorize(method: string, uri: string, body = ''): { name: string; value: string } | undefined {
    const ch = this.challenge;
    if (!ch) return undefined;
    this.nc++;
    const value = authorization(ch, this.creds, method, uri, this.nc, this.cnonce, body);
    return { name: ch.header === 'proxy-authenticate' ? 'proxy-authorization' : 'authorization', value };
  }
}
