import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { trunkSchema } from '../../src/config/schema.js';
import { DigestAuthenticator, digestResponse } from '../../src/sip/digest.js';
import { answerDirection, buildAnswer, readOffer } from '../../src/sip/sdp.js';
import { toE164, TrunkTable, userOf } from '../../src/sip/trunks.js';
import { parseMessage, parseNameAddr, parseUri, validateRequest } from '../../src/sip/message.js';

const mtn = trunkSchema.parse({
  name: 'mtn',
  allow: ['196.12.0.0/16', '10.1.2.3'],
  countryCode: '250',
  nationalPrefix: '0',
});
const go = trunkSchema.parse({
  name: 'go',
  allow: ['2001:db8::/32', '127.0.0.2/32'],
  countryCode: '356',
  codecs: ['PCMU'],
});

describe('trunks: source match, E.164, digest, SDP', () => {
  it('matches the INVITE source against allow CIDRs (IPv4, IPv6, v4-mapped); unknown → none', () => {
    const t = new TrunkTable([mtn, go]);
    expect(t.match('196.12.200.1')?.name).toBe('mtn');
    expect(t.match('::ffff:196.12.0.9')?.name).toBe('mtn');
    expect(t.match('10.1.2.3')?.name).toBe('mtn');
    expect(t.match('10.1.2.4')).toBeUndefined();
    expect(t.match('2001:db8::5')?.name).toBe('go');
    expect(t.match('127.0.0.2')?.name).toBe('go');
    expect(t.match('127.0.0.1')).toBeUndefined();
    expect(t.match('not-an-ip')).toBeUndefined();
  });

  it('normalises numbers to E.164: MTN Rwanda (+250, prefix 0) and GO Malta (+356, none)', () => {
    expect(toE164('0788123456', mtn)).toBe('+250788123456');
    expect(toE164('788123456', mtn)).toBe('+250788123456');
    expect(toE164('250788123456', mtn)).toBe('+250788123456');
    expect(toE164('+250 788-123-456', mtn)).toBe('+250788123456');
    expect(toE164('0035621234567', mtn)).toBe('+35621234567');
    expect(toE164('21234567', go)).toBe('+35621234567');
    expect(toE164('79123456', go)).toBe('+35679123456');
    expect(toE164('anonymous', go)).toBe('anonymous');
    expect(userOf('"Bob" <sip:0788123456@10.0.0.1;user=phone>;tag=x')).toBe('0788123456');
    expect(userOf('<tel:+250788123456>')).toBe('+250788123456');
  });

  it('digest: challenge → valid response accepted; wrong password, other realm, forged and expired nonces refused', () => {
    let now = 1_000_000;
    const auth = new DigestAuthenticator(60_000, () => now);
    const creds = { realm: 'gw', username: 'mtn', password: 's3cret' };
    const ch = auth.challenge('gw');
    expect(ch).toMatch(/^Digest realm="gw", nonce="[^"]+", algorithm=MD5, qop="auth"$/);
    const uri = 'sip:0700@gw';
    expect(auth.verify(digestResponse(ch, 'INVITE', uri, creds), 'INVITE', creds)).toEqual({ ok: true });
    expect(auth.verify(undefined, 'INVITE', creds)).toEqual({ ok: false, why: 'missing' });
    expect(auth.verify(digestResponse(ch, 'INVITE', uri, { ...creds, password: 'x' }), 'INVITE', creds)).toMatchObject({
      why: 'bad_response',
    });
    expect(
      auth.verify(digestResponse(ch, 'INVITE', uri, { username: 'eve', password: 's3cret' }), 'INVITE', creds),
    ).toMatchObject({ why: 'wrong_user' });
    const forged = ch.replace(/nonce="([^".]+)\.[^"]+"/, 'nonce="$1.deadbeefdeadbeefdeadbeef"');
    expect(auth.verify(digestResponse(forged, 'INVITE', uri, creds), 'INVITE', creds)).toMatchObject({
      why: 'bad_nonce',
    });
    now += 61_000;
    expect(auth.verify(digestResponse(ch, 'INVITE', uri, creds), 'INVITE', creds)).toMatchObject({ why: 'stale' });
    expect(auth.challenge('gw', true)).toMatch(/stale=true$/);
    // RFC 2617 without qop (older carriers).
    const fresh = auth.challenge('gw');
    const nonce = /nonce="([^"]+)"/.exec(fresh)![1]!;
    const md5 = (s: string) => createHash('md5').update(s).digest('hex');
    const resp = md5(`${md5('mtn:gw:s3cret')}:${nonce}:${md5(`INVITE:${uri}`)}`);
    const legacy = `Digest username="mtn", realm="gw", nonce="${nonce}", uri="${uri}", response="${resp}"`;
    expect(auth.verify(legacy, 'INVITE', creds)).toEqual({ ok: true });
  });

  it('SDP: picks the first offered codec the trunk allows, keeps telephone-event, refuses what we cannot bridge', () => {
    const offer = (m: string, extra = '') =>
      `v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 ${m}\r\na=rtpmap:101 telephone-event/8000\r\n${extra}`;
    const r1 = readOffer(offer('RTP/AVP 18 0 8 101'), ['PCMA', 'PCMU'], true);
    expect(r1).toMatchObject({
      ok: true,
      offer: {
        codec: 'PCMU',
        payloadType: 0,
        dtmfPayloadType: 101,
        address: '10.0.0.1',
        port: 4000,
        direction: 'sendrecv',
      },
    });
    expect(readOffer(offer('RTP/AVP 0 8 101'), ['PCMA'], false)).toMatchObject({
      ok: true,
      offer: { codec: 'PCMA', dtmfPayloadType: undefined },
    });
    expect(readOffer(offer('RTP/AVP 18 101'), ['PCMA', 'PCMU'], true)).toMatchObject({ ok: false, status: 488 });
    expect(readOffer(offer('RTP/SAVP 0'), ['PCMU'], true)).toMatchObject({ ok: false, status: 488 });
    expect(readOffer(offer('RTP/AVP 0', 'a=sendonly\r\n'), ['PCMU'], true)).toMatchObject({
      ok: true,
      offer: { direction: 'sendonly' },
    });
    expect(readOffer('garbage', ['PCMU'], true).ok).toBe(false);
    expect(answerDirection('sendonly')).toBe('recvonly');
    expect(answerDirection('inactive')).toBe('inactive');
    const a = buildAnswer({
      address: '192.0.2.1',
      port: 20000,
      sessionId: 5,
      version: 1,
      codec: 'PCMA',
      payloadType: 8,
      dtmfPayloadType: 101,
      direction: 'recvonly',
    });
    expect(a).toContain('m=audio 20000 RTP/AVP 8 101');
    expect(a).toContain('a=rtpmap:8 PCMA/8000');
    expect(a).toContain('a=fmtp:101 0-16');
    expect(a).toContain('c=IN IP4 192.0.2.1');
    expect(a).toContain('a=recvonly');
    expect(a).not.toContain('PCMU');
  });

  it('SIP parsing: compact headers, folded lines, name-addr/URI forms, validation reasons', () => {
    const p = parseMessage(
      'INVITE sip:1@h SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bKx, SIP/2.0/UDP 5.6.7.8\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\ni: abc\r\nCSeq: 1\r\n  INVITE\r\nl: 0\r\n\r\n',
    );
    expect(p.ok).toBe(true);
    if (!p.ok || p.msg.kind !== 'request') throw new Error('the INVITE did not parse as a request'); // never return silently
    expect(p.msg.headers.getAll('via')).toHaveLength(2);
    expect(p.msg.headers.get('cseq')).toBe('1 INVITE');
    expect(validateRequest(p.msg)).toBeUndefined();
    expect(parseNameAddr('"A, B" <sip:x@y>;tag=9')).toMatchObject({
      display: 'A, B',
      uri: 'sip:x@y',
      params: { tag: '9' },
    });
    expect(parseUri('sip:+250788@[2001:db8::1]:5070;transport=udp')).toMatchObject({
      user: '+250788',
      host: '2001:db8::1',
      port: 5070,
    });
    const bad = parseMessage(
      'INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n',
    );
    expect(bad.ok && bad.msg.kind === 'request' && validateRequest(bad.msg)).toBe(
      'CSeq method does not match the request',
    );
    expect(parseMessage('hello').ok).toBe(false);
    expect(parseMessage('INVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\nv=0').ok).toBe(false);
    expect(parseMessage('INVITE sip:x SIP/2.0\r\nbad header\r\n\r\n').ok).toBe(false);
  });
});
