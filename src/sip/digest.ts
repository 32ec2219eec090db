import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { parseUri } from './message.js';

/**
 * SIP digest authentication, server side (RFC 2617 / RFC 7616 with MD5 — what carriers send).
 * Nonces are stateless: `<issued-at>.<HMAC(secret, issued-at|realm)>`, so nothing is stored per
 * challenge and an expired nonce is recognised (and answered with stale=true) without a table.
 * What is stored is the highest `nc` accepted per nonce (RFC 7616 §3.3), only after a response
 * verified (so only our nonces and real credentials make entries) and bounded, so a captured
 * Authorization cannot be replayed; a nonce used without qop is single-use.
 */
export interface DigestCredentials {
  realm: string;
  username: string;
  password: string;
}

export type DigestResult =
  | { ok: true }
  | {
      ok: false;
      why: 'missing' | 'malformed' | 'wrong_user' | 'bad_nonce' | 'stale' | 'bad_response' | 'replay' | 'uri_mismatch';
    };

/** Nonces whose nc we remember at most (oldest forgotten first; a forgotten nonce just gets re-challenged). */
const MAX_TRACKED_NONCES = 10_000;

const md5 = (s: string) => createHash('md5').update(s).digest('hex');

export class DigestAuthenticator {
  private readonly secret = randomBytes(32);
  /** nonce → highest nc accepted (0 for a nonce used without qop), in first-use order. */
  private readonly used = new Map<string, { nc: number; issued: number }>();

  constructor(
    private readonly nonceTtlMs = 5 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  private sign(issued: string, realm: string): string {
    return createHmac('sha256', this.secret).update(`${issued}|${realm}`).digest('hex').slice(0, 24);
  }

  nonce(realm: string): string {
    // Issue time (for expiry) plus randomness: two challenges in the same millisecond (a burst of
    // calls from one trunk) must not share a nonce, or the second answer looks like a replay.
    const issued = `${this.now().toString(36)}-${randomBytes(6).toString('hex')}`;
    return `${issued}.${this.sign(issued, realm)}`;
  }

  /** WWW-Authenticate value for a 401. */
  challenge(realm: string, stale = false): string {
    return `Digest realm="${realm}", nonce="${this.nonce(realm)}", algorithm=MD5, qop="auth"${stale ? ', stale=true' : ''}`;
  }

  /**
   * Check an Authorization / Proxy-Authorization value for `method` sent to `requestUri` (the
   * digest uri must name the same resource, RFC 2617 §3.2.2.5; omitted only by unit tests).
   */
  verify(
    authorization: string | undefined,
    method: string,
    creds: DigestCredentials,
    requestUri?: string,
  ): DigestResult {
    if (!authorization) return { ok: false, why: 'missing' };
    const p = parseDigestParams(authorization);
    if (!p) return { ok: false, why: 'malformed' };
    const { username, realm, nonce, uri, response } = p;
    if (!username || !realm || !nonce || !uri || !response) return { ok: false, why: 'malformed' };
    if (p.algorithm && p.algorithm.toUpperCase() !== 'MD5') return { ok: false, why: 'malformed' };
    if (p.qop !== undefined && (p.qop.toLowerCase() !== 'auth' || !/^[0-9a-f]{8}$/i.test(p.nc ?? '') || !p.cnonce))
      return { ok: false, why: 'malformed' };
    if (username !== creds.username || realm !== creds.realm) return { ok: false, why: 'wrong_user' };
    if (requestUri !== undefined && !sameUri(uri, requestUri)) return { ok: false, why: 'uri_mismatch' };
    const [issued, sig] = nonce.split('.');
    if (!issued || !sig || sig !== this.sign(issued, realm)) return { ok: false, why: 'bad_nonce' };
    const issuedAt = parseInt(issued, 36); // stops at the '-' before the random part
    if (this.now() - issuedAt > this.nonceTtlMs) return { ok: false, why: 'stale' };
    const ha1 = md5(`${creds.username}:${creds.realm}:${creds.password}`);
    const ha2 = md5(`${method}:${uri}`);
    const expected =
      p.qop !== undefined ? md5(`${ha1}:${nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`) : md5(`${ha1}:${nonce}:${ha2}`);
    const a = Buffer.from(expected);
    const b = Buffer.from(response.toLowerCase());
    if (a.length !== b.length || !timingSafeEqual(a, b)) return { ok: false, why: 'bad_response' };
    return this.useNonce(nonce, issuedAt, p.qop !== undefined ? parseInt(p.nc!, 16) : 0);
  }

  /** Accept `nc` for `nonce` only if higher than any before (qop=auth) / the nonce is unused (no qop). */
  private useNonce(nonce: string, issued: number, nc: number): DigestResult {
    const seen = this.used.get(nonce);
    if (seen && (nc === 0 || nc <= seen.nc)) return { ok: false, why: 'replay' };
    if (seen) seen.nc = nc;
    else {
      const horizon = this.now() - this.nonceTtlMs;
      for (const [k, v] of this.used) {
        if (v.issued >= horizon && this.used.size < MAX_TRACKED_NONCES) break;
        this.used.delete(k); // expired (a stale nonce is refused anyway) or the oldest over the cap
      }
      this.used.set(nonce, { nc, issued });
    }
    return { ok: true };
  }

  /** Nonces whose nc is tracked (tests check the bound). */
  get trackedNonces(): number {
    return this.used.size;
  }
}

/**
 * The auth-params of a `Digest` credentials value by their grammar (RFC 7235 §2.1, RFC 3261 §25):
 * `name=token` or `name="quoted string"` separated by commas, where a quoted value may hold `,`,
 * `;`, `=` and backslash escapes — `uri="sip:+250788@10.0.0.1;user=phone"` stays one value.
 * Undefined when the value is not Digest credentials or does not follow the grammar.
 */
export function parseDigestParams(value: string): Record<string, string> | undefined {
  const m = /^\s*Digest\s+/i.exec(value);
  if (!m) return undefined;
  const out: Record<string, string> = {};
  let i = m[0].length;
  const s = value;
  const skip = (chars: string) => {
    while (i < s.length && chars.includes(s[i]!)) i++;
  };
  for (;;) {
    skip(' \t\r\n,');
    if (i >= s.length) return out;
    const name = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(s.slice(i))?.[0];
    if (!name) return undefined;
    i += name.length;
    skip(' \t');
    if (s[i] !== '=') return undefined;
    i++;
    skip(' \t');
    let v = '';
    if (s[i] === '"') {
      i++;
      for (;;) {
        if (i >= s.length) return undefined; // unterminated quoted string
        const c = s[i++]!;
        if (c === '"') break;
        v += c === '\\' && i < s.length ? s[i++] : c;
      }
    } else {
      const tok = /^[^\s,]*/.exec(s.slice(i))![0];
      i += tok.length;
      v = tok;
    }
    out[name.toLowerCase()] = v;
    skip(' \t');
    if (i < s.length && s[i] !== ',') return undefined;
  }
}

/**
 * Whether the digest uri names the Request-URI (RFC 2617 §3.2.2.5): the same text, or the same SIP
 * URI by RFC 3261 §19.1.4's main rules (scheme, user, case-insensitive host, port, and the
 * user/transport/maddr/method/ttl parameters). Tolerated: a digest uri of just our host and port
 * (no user), which sipp and some older CPEs send for every request — it still cannot move a
 * response to another host, and nc tracking stops its replay.
 */
function sameUri(a: string, b: string): boolean {
  if (a === b) return true;
  const x = parseUri(a);
  const y = parseUri(b);
  if (!x || !y) return false;
  if (x.scheme !== y.scheme || x.host.toLowerCase() !== y.host.toLowerCase() || x.port !== y.port) return false;
  if (x.user === undefined && Object.keys(x.params).length === 0) return true;
  if (x.user !== y.user) return false;
  return ['user', 'transport', 'maddr', 'method', 'ttl'].every(
    (k) => (x.params[k] ?? '').toLowerCase() === (y.params[k] ?? '').toLowerCase(),
  );
}

/** The client side, for tests and peers: the Authorization value answering `challenge`. */
export function digestResponse(
  challenge: string,
  method: string,
  uri: string,
  creds: { username: string; password: string },
  cnonce = randomBytes(8).toString('hex'),
  nc = 1,
): string {
  const p = parseDigestParams(challenge) ?? {};
  const realm = p.realm ?? '';
  const ha1 = md5(`${creds.username}:${realm}:${creds.password}`);
  const ha2 = md5(`${method}:${uri}`);
  const ncHex = nc.toString(16).padStart(8, '0');
  const response = md5(`${ha1}:${p.nonce}:${ncHex}:${cnonce}:auth:${ha2}`);
  return `Digest username="${creds.username}", realm="${realm}", nonce="${p.nonce}", uri="${uri}", response="${response}", algorithm=MD5, qop=auth, nc=${ncHex}, cnonce="${cnonce}"`;
}
