import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DigestAuthenticator } from '../../src/sip/digest.js';
import { authorization, DigestSession, parseAuthParams, parseChallenge } from '../../src/sip/digest-client.js';
import { SipHeaders } from '../../src/sip/message.js';

const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const headersOf = (name: string, ...values: string[]) => {
  const h = new SipHeaders();
  for (const v of values) h.add(name, v);
  return h;
};

describe('digest client (answering 401/407)', () => {
  it('computes the RFC 2617 qop=auth response the server verifies, with nc counting up on nonce reuse', () => {
    const server = new DigestAuthenticator();
    const creds = { realm: 'mtn.rw', username: 'gw1', password: 's3cret' };
    const session = new DigestSession({ username: 'gw1', password: 's3cret' });
    const ch = server.challenge('mtn.rw');
    expect(session.onChallenge(401, headersOf('www-authenticate', ch), false)).toEqual({ ok: true });
    const uri = 'sip:+250788123456@10.0.0.1;user=phone';
    const first = session.authorize('INVITE', 'sip:reg.mtn.rw')!;
    const second = session.authorize('INVITE', 'sip:reg.mtn.rw')!;
    expect(first.name).toBe('authorization');
    expect(first.value).toMatch(/nc=00000001/);
    expect(second.value).toMatch(/nc=00000002/);
    expect(server.verify(first.value, 'INVITE', creds)).toEqual({ ok: true });
    expect(server.verify(second.value, 'INVITE', creds)).toEqual({ ok: true });
    // The known-answer form: recompute by hand from the parts we sent.
    const p = parseAuthParams(first.value.replace(/^Digest\s+/, ''))!;
    const ha1 = md5('gw1:mtn.rw:s3cret');
    const ha2 = md5('INVITE:sip:reg.mtn.rw');
    expect(p.response).toBe(md5(`${ha1}:${p.nonce}:00000001:${p.cnonce}:auth:${ha2}`));
    expect(uri).toContain(';'); // quoted values with ';' survive the parser below
    expect(parseAuthParams(`uri="${uri}", realm="a,b"`)).toEqual({ uri, realm: 'a,b' });
  });

  it('answers 407 with Proxy-Authorization and echoes opaque; RFC 2069 servers (no qop) get the old form', () => {
    const s = new DigestSession({ username: 'u', password: 'p' });
    const v = s.onChallenge(407, headersOf('proxy-authenticate', 'Digest realm="r", nonce="n1", opaque="op"'), false);
    expect(v.ok).toBe(true);
    const a = s.authorize('INVITE', 'sip:x@y')!;
    expect(a.name).toBe('proxy-authorization');
    expect(a.value).toContain('opaque="op"');
    expect(a.value).not.toContain('qop=');
    expect(a.value).toContain(`response="${md5(`${md5('u:r:p')}:n1:${md5('INVITE:sip:x@y')}`)}"`);
  });

  it('one retry per challenge: a second challenge after our answer stops, unless stale=true', () => {
    const s = new DigestSession({ username: 'u', password: 'wrong' });
    const ch = (nonce: string, stale = false) =>
      headersOf('www-authenticate', `Digest realm="r", nonce="${nonce}", qop="auth"${stale ? ', stale=true' : ''}`);
    expect(s.onChallenge(401, ch('a'), false).ok).toBe(true);
    expect(s.onChallenge(401, ch('b'), true)).toEqual({ ok: false, why: 'rejected' });
    expect(s.ready).toBe(false);
    expect(s.onChallenge(401, ch('c'), false).ok).toBe(true);
    expect(s.onChallenge(401, ch('d', true), true).ok).toBe(true); // stale: the nonce aged, not the password
  });

  it('honours a configured realm, prefers SHA-256, and refuses hostile or unusable challenges', () => {
    const s = new DigestSession({ username: 'u', password: 'p', realm: 'carrier' });
    expect(s.onChallenge(401, headersOf('www-authenticate', 'Digest realm="evil", nonce="x"'), false)).toEqual({
      ok: false,
      why: 'realm_mismatch',
    });
    expect(s.onChallenge(401, new SipHeaders(), false)).toEqual({ ok: false, why: 'no_challenge' });
    expect(s.onChallenge(401, headersOf('www-authenticate', 'Basic realm="carrier"'), false)).toEqual({
      ok: false,
      why: 'unsupported',
    });
    const two = headersOf(
      'www-authenticate',
      'Digest realm="carrier", nonce="m", algorithm=MD5, qop="auth"',
      'Digest realm="carrier", nonce="s", algorithm=SHA-256, qop="auth"',
    );
    expect(s.onChallenge(401, two, false).ok).toBe(true);
    expect(s.authorize('REGISTER', 'sip:carrier')!.value).toMatch(/algorithm=SHA-256/);
    // A nonce with CR/LF or quotes would inject headers into our next request: not answered.
    expect(parseChallenge('Digest realm="r", nonce="a\r\nVia: x"')).toBeUndefined();
    expect(parseChallenge('Digest realm="r", nonce="a\\"b"')).toBeUndefined();
    expect(parseChallenge('Digest realm="r", nonce="n", algorithm=SHA-512')).toBeUndefined();
    expect(parseChallenge('Digest realm="r", nonce="n", qop="auth-conf"')).toBeUndefined();
    expect(parseChallenge('Digest realm="r" nonce="n"')).toBeUndefined(); // missing comma: malformed
    expect(parseChallenge(`Digest realm="r", nonce="${'x'.repeat(100_000)}`)).toBeUndefined(); // unterminated
  });

  it('MD5-sess and auth-int follow RFC 2617 (H(A1) with cnonce; H(body) in A2)', () => {
    const ch = parseChallenge('Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth-int"')!;
    const v = authorization(ch, { username: 'u', password: 'p' }, 'INVITE', 'sip:a@b', 1, 'c0', 'v=0\r\n');
    const ha1 = md5(`${md5('u:r:p')}:n:c0`);
    const ha2 = md5(`INVITE:sip:a@b:${md5('v=0\r\n')}`);
    expect(v).toContain(`response="${md5(`${ha1}:n:00000001:c0:auth-int:${ha2}`)}"`);
  });

  it('refuses credentials that would break the header', () => {
    expect(() => new DigestSession({ username: 'a"b', password: 'p' })).toThrow(/digest username/);
    expect(() => new DigestSession({ username: 'a\r\nb', password: 'p' })).toThrow(/control character/);
  });
});
