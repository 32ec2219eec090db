import { describe, expect, it } from 'vitest';
import { DigestAuthenticator, digestResponse, parseDigestParams } from '../../src/sip/digest.js';

const creds = { realm: 'gw.example', username: 'mtn', password: 's3cret' };

describe('inbound digest (src/sip/digest.ts)', () => {
  it('parses credentials by their grammar: quoted values keep ; , = and escapes', () => {
    const p = parseDigestParams(
      'Digest username="mtn", realm="gw, \\"x\\"", uri="sip:+250788@10.0.0.1;user=phone", nc=00000001 ,qop=auth,response="ab"',
    );
    expect(p).toEqual({
      username: 'mtn',
      realm: 'gw, "x"',
      uri: 'sip:+250788@10.0.0.1;user=phone',
      nc: '00000001',
      qop: 'auth',
      response: 'ab',
    });
    expect(parseDigestParams('Digest uri="sip:unterminated')).toBeUndefined();
    expect(parseDigestParams('Digest =x')).toBeUndefined();
    expect(parseDigestParams('Basic dXNlcjpwYXNz')).toBeUndefined();
  });

  it('a ;user=phone Request-URI verifies; a digest uri for another resource is refused', () => {
    const auth = new DigestAuthenticator();
    const ruri = 'sip:+250788123456@10.0.0.1;user=phone';
    const ok = digestResponse(auth.challenge('gw.example'), 'INVITE', ruri, creds);
    expect(auth.verify(ok, 'INVITE', creds, ruri)).toEqual({ ok: true });
    const other = digestResponse(auth.challenge('gw.example'), 'INVITE', 'sip:+250788999999@10.0.0.1', creds);
    expect(auth.verify(other, 'INVITE', creds, ruri)).toEqual({ ok: false, why: 'uri_mismatch' });
    // sipp and some CPEs send just our host:port; another host or port is still refused.
    const bare = digestResponse(auth.challenge('gw.example'), 'INVITE', 'sip:10.0.0.1', creds);
    expect(auth.verify(bare, 'INVITE', creds, ruri)).toEqual({ ok: true });
    const elsewhere = digestResponse(auth.challenge('gw.example'), 'INVITE', 'sip:10.0.0.2', creds);
    expect(auth.verify(elsewhere, 'INVITE', creds, ruri)).toEqual({ ok: false, why: 'uri_mismatch' });
    // The same URI written differently (host case, parameter order) is the same resource.
    const same = digestResponse(auth.challenge('gw.example'), 'INVITE', 'sip:+250788123456@10.0.0.1;user=phone', creds);
    expect(auth.verify(same, 'INVITE', creds, 'sip:+250788123456@10.0.0.1;foo=1;USER=phone')).toEqual({ ok: true });
  });

  it('challenges issued in the same millisecond get distinct nonces: both answers verify', () => {
    const auth = new DigestAuthenticator(5 * 60_000, () => 1_800_000_000_000);
    const uri = 'sip:0700@gw';
    const a = digestResponse(auth.challenge('gw.example'), 'INVITE', uri, creds);
    const b = digestResponse(auth.challenge('gw.example'), 'INVITE', uri, creds);
    expect(parseDigestParams(a)!.nonce).not.toBe(parseDigestParams(b)!.nonce);
    expect(auth.verify(a, 'INVITE', creds, uri)).toEqual({ ok: true });
    expect(auth.verify(b, 'INVITE', creds, uri)).toEqual({ ok: true });
    expect(auth.verify(b, 'INVITE', creds, uri)).toEqual({ ok: false, why: 'replay' });
  });

  it('qop=auth: nc must grow per nonce, a replayed Authorization is refused', () => {
    const auth = new DigestAuthenticator();
    const uri = 'sip:0700@gw';
    const ch = auth.challenge('gw.example');
    const first = digestResponse(ch, 'INVITE', uri, creds, 'c1', 1);
    expect(auth.verify(first, 'INVITE', creds, uri)).toEqual({ ok: true });
    expect(auth.verify(first, 'INVITE', creds, uri)).toEqual({ ok: false, why: 'replay' });
    expect(auth.verify(digestResponse(ch, 'INVITE', uri, creds, 'c2', 3), 'INVITE', creds, uri)).toEqual({ ok: true });
    expect(auth.verify(digestResponse(ch, 'INVITE', uri, creds, 'c3', 2), 'INVITE', creds, uri)).toMatchObject({
      why: 'replay',
    });
    // A wrong response does not consume an nc.
    const wrong = digestResponse(ch, 'INVITE', uri, { ...creds, password: 'x' }, 'c4', 4);
    expect(auth.verify(wrong, 'INVITE', creds, uri)).toMatchObject({ why: 'bad_response' });
    expect(auth.verify(digestResponse(ch, 'INVITE', uri, creds, 'c4', 4), 'INVITE', creds, uri)).toEqual({ ok: true });
    expect(auth.verify(first.replace('nc=00000001', 'nc=1'), 'INVITE', creds, uri)).toMatchObject({
      why: 'malformed',
    });
  });

  it('remembers a bounded number of nonces, dropping expired ones first', () => {
    let now = 1_000_000;
    const auth = new DigestAuthenticator(60_000, () => now);
    const uri = 'sip:0700@gw';
    for (let i = 0; i < 50; i++, now++)
      expect(
        auth.verify(digestResponse(auth.challenge('gw.example'), 'INVITE', uri, creds), 'INVITE', creds, uri),
      ).toEqual({ ok: true });
    expect(auth.trackedNonces).toBe(50);
    now += 61_000; // every nonce so far has expired: the next use prunes them
    auth.verify(digestResponse(auth.challenge('gw.example'), 'INVITE', uri, creds), 'INVITE', creds, uri);
    expect(auth.trackedNonces).toBe(1);
    for (let i = 0; i < 10_050; i++, now++)
      auth.verify(digestResponse(auth.challenge('gw.example'), 'INVITE', uri, creds, `c${i}`), 'INVITE', creds, uri);
    expect(auth.trackedNonces).toBeLessThanOrEqual(10_000);
  });
});
