import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { parseParams, splitList } from './message.js';

/**
 * SIP digest authentication, server side (RFC 2617 / RFC 7616 with MD5 — what carriers send).
 * Nonces are stateless: `<issued-at>.<HMAC(secret, issued-at|realm)>`, so nothing is stored per
 * challenge and an expired nonce is recognised (and answered with stale=true) without a table.
 */
export interface DigestCredentials {
  realm: string;
  username: string;
  password: string;
}

export type DigestResult =
  { ok: true } | { ok: false; why: 'missing' | 'malformed' | 'wrong_user' | 'bad_nonce' | 'stale' | 'bad_response' };

const md5 = (s: string) => createHash('md5').update(s).digest('hex');

export class DigestAuthenticator {
  private readonly secret = randomBytes(32);

  constructor(
    private readonly nonceTtlMs = 5 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  private sign(issued: string, realm: string): string {
    return createHmac('sha256', this.secret).update(`${issued}|${realm}`).digest('hex').slice(0, 24);
  }

  nonce(realm: string): string {
    const issued = this.now().toString(36);
    return `${issued}.${this.sign(issued, realm)}`;
  }

  /** WWW-Authenticate value for a 401. */
  challenge(realm: string, stale = false): string {
    return `Digest realm="${realm}", nonce="${this.nonce(realm)}", algorithm=MD5, qop="auth"${stale ? ', stale=true' : ''}`;
  }

  verify(authorization: string | undefined, method: string, creds: DigestCredentials): DigestResult {
    if (!authorization) return { ok: false, why: 'missing' };
    const m = /^\s*Digest\s+(.*)$/is.exec(authorization);
    if (!m) return { ok: false, why: 'malformed' };
    const p: Record<string, string> = {};
    for (const part of splitList(m[1]!)) {
      const kv = parseParams(part);
      for (const [k, v] of Object.entries(kv)) p[k] = v.replace(/^"|"$/g, '');
    }
    const { username, realm, nonce, uri, response } = p;
    if (!username || !realm || !nonce || !uri || !response) return { ok: false, why: 'malformed' };
    if (p.algorithm && p.algorithm.toUpperCase() !== 'MD5') return { ok: false, why: 'malformed' };
    if (username !== creds.username || realm !== creds.realm) return { ok: false, why: 'wrong_user' };
    const [issued, sig] = nonce.split('.');
    if (!issued || !sig || sig !== this.sign(issued, realm)) return { ok: false, why: 'bad_nonce' };
    if (this.now() - parseInt(issued, 36) > this.nonceTtlMs) return { ok: false, why: 'stale' };
    const ha1 = md5(`${creds.username}:${creds.realm}:${creds.password}`);
    const ha2 = md5(`${method}:${uri}`);
    const expected =
      p.qop !== undefined
        ? md5(`${ha1}:${nonce}:${p.nc ?? ''}:${p.cnonce ?? ''}:${p.qop}:${ha2}`)
        : md5(`${ha1}:${nonce}:${ha2}`);
    const a = Buffer.from(expected);
    const b = Buffer.from(response.toLowerCase());
    return a.length === b.length && timingSafeEqual(a, b) ? { ok: true } : { ok: false, why: 'bad_response' };
  }
}

/** The client side, for tests and peers: the Authorization value answering `challenge`. */
export function digestResponse(
  challenge: string,
  method: string,
  uri: string,
  creds: { username: string; password: string },
  cnonce = randomBytes(8).toString('hex'),
): string {
  const p: Record<string, string> = {};
  for (const part of splitList(challenge.replace(/^\s*Digest\s+/i, ''))) {
    for (const [k, v] of Object.entries(parseParams(part))) p[k] = v.replace(/^"|"$/g, '');
  }
  const realm = p.realm ?? '';
  const ha1 = md5(`${creds.username}:${realm}:${creds.password}`);
  const ha2 = md5(`${method}:${uri}`);
  const nc = '00000001';
  const response = md5(`${ha1}:${p.nonce}:${nc}:${cnonce}:auth:${ha2}`);
  return `Digest username="${creds.username}", realm="${realm}", nonce="${p.nonce}", uri="${uri}", response="${response}", algorithm=MD5, qop=auth, nc=${nc}, cnonce="${cnonce}"`;
}
