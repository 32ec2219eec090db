import { parse } from 'sdp-transform';
import { describe, expect, it } from 'vitest';
import { answerDirection, answerShape, buildAnswer, readOffer, sendPtime } from '../../src/sip/sdp.js';

const sdp = (...lines: string[]) =>
  ['v=0', 'o=- 1 1 IN IP4 10.0.0.1', 's=-', 'c=IN IP4 10.0.0.1', 't=0 0', ...lines, ''].join('\r\n');

const answerTo = (offerSdp: string) => {
  const r = readOffer(offerSdp, ['PCMA', 'PCMU'], true);
  if (!r.ok) throw new Error(r.reason);
  const text = buildAnswer({
    address: '192.0.2.1',
    port: 20000,
    sessionId: 1,
    version: 1,
    codec: r.offer.codec,
    payloadType: r.offer.payloadType,
    dtmfPayloadType: r.offer.dtmfPayloadType,
    direction: answerDirection(r.offer.direction),
    ...answerShape(r.offer),
  });
  return { offer: r.offer, text, media: parse(text).media };
};

describe('SDP answer shape (RFC 3264 §6)', () => {
  it('audio+video: same m-lines in the same order, video refused with port 0', () => {
    const { media } = answerTo(sdp('m=audio 4000 RTP/AVP 8', 'm=video 4002 RTP/AVP 96', 'a=rtpmap:96 H264/90000'));
    expect(media.map((m) => [m.type, m.port, m.protocol])).toEqual([
      ['audio', 20000, 'RTP/AVP'],
      ['video', 0, 'RTP/AVP'],
    ]);
    expect(String(media[1]!.payloads)).toBe('96');
  });

  it('a port-0 first audio stream is skipped; the first usable one is answered in place', () => {
    const { offer, media } = answerTo(
      sdp('m=audio 0 RTP/AVP 0', 'm=audio 4000 RTP/SAVP 8', 'm=audio 4004 RTP/AVP 18 8', 'a=rtpmap:18 G729/8000'),
    );
    expect(offer).toMatchObject({ port: 4004, codec: 'PCMA', mediaIndex: 2 });
    expect(media.map((m) => m.port)).toEqual([0, 0, 20000]);
    expect(String(media[2]!.payloads)).toBe('8');
  });

  it('T.38 image line refused in place, audio answered', () => {
    const { media, text } = answerTo(sdp('m=image 5000 udptl t38', 'm=audio 4000 RTP/AVP 0'));
    expect(media.map((m) => [m.type, m.port])).toEqual([
      ['image', 0],
      ['audio', 20000],
    ]);
    expect(text).toContain('m=image 0 udptl t38');
  });

  it('only a T.38 stream (fax re-INVITE): 488 with the reason', () => {
    expect(readOffer(sdp('m=audio 0 RTP/AVP 8', 'm=image 5000 udptl t38'), ['PCMA'], true)).toEqual({
      ok: false,
      status: 488,
      reason: 'Not Acceptable Here (no audio stream)',
    });
  });
});

describe('SDP hostile and unusual values', () => {
  it('a=rtcp:0, a=rtcp above 65535 and an RTP port above 65535 are refused with 488 and the reason', () => {
    expect(readOffer(sdp('m=audio 4000 RTP/AVP 8', 'a=rtcp:0'), ['PCMA'], true)).toMatchObject({
      ok: false,
      status: 488,
      reason: 'Not Acceptable Here (a=rtcp port 0 out of range)',
    });
    expect(readOffer(sdp('m=audio 4000 RTP/AVP 8', 'a=rtcp:70000'), ['PCMA'], true)).toMatchObject({
      status: 488,
      reason: 'Not Acceptable Here (a=rtcp port 70000 out of range)',
    });
    expect(readOffer(sdp('m=audio 70000 RTP/AVP 8'), ['PCMA'], true)).toMatchObject({
      status: 488,
      reason: 'Not Acceptable Here (RTP port 70000 out of range)',
    });
  });

  it('IPv6 media (IN IP6): taken when we have IPv6 media, else a precise 488; the answer is IN IP6', () => {
    const v6 = ['v=0', 'o=- 1 1 IN IP6 ::1', 's=-', 'c=IN IP6 2001:db8::1', 't=0 0', 'm=audio 4000 RTP/AVP 8', ''].join(
      '\r\n',
    );
    expect(readOffer(v6, ['PCMA'], true)).toMatchObject({
      status: 488,
      reason: 'Not Acceptable Here (IPv6 media not available)',
    });
    const r = readOffer(v6, ['PCMA'], true, [4, 6]);
    expect(r).toMatchObject({ ok: true, offer: { address: '2001:db8::1', family: 6 } });
    const a = buildAnswer({
      address: '2001:db8::2',
      port: 20000,
      sessionId: 1,
      version: 1,
      codec: 'PCMA',
      payloadType: 8,
      dtmfPayloadType: undefined,
      direction: 'sendrecv',
    });
    expect(a).toContain('c=IN IP6 2001:db8::2');
    expect(a).toContain('o=- 1 1 IN IP6 2001:db8::2');
    expect(
      readOffer(sdp('m=audio 4000 RTP/AVP 8').replace('c=IN IP4 10.0.0.1', 'c=IN IP4 sbc.example'), ['PCMA'], true),
    ).toMatchObject({
      status: 488,
      reason: 'Not Acceptable Here (media address sbc.example is not an IP address)',
    });
  });

  it('c=0.0.0.0 is hold: sendrecv becomes sendonly (we answer recvonly), recvonly becomes inactive', () => {
    const held = (dir: string) =>
      readOffer(
        sdp('m=audio 4000 RTP/AVP 8', `a=${dir}`).replace(/c=IN IP4 10\.0\.0\.1/, 'c=IN IP4 0.0.0.0'),
        ['PCMA'],
        true,
      );
    expect(held('sendrecv')).toMatchObject({ ok: true, offer: { direction: 'sendonly', nullAddress: true } });
    expect(held('recvonly')).toMatchObject({ ok: true, offer: { direction: 'inactive' } });
  });

  it('CN offered (static 13 or dynamic) is accepted and answered', () => {
    const { offer, text } = answerTo(sdp('m=audio 4000 RTP/AVP 8 13 101', 'a=rtpmap:101 telephone-event/8000'));
    expect(offer.cnPayloadType).toBe(13);
    expect(text).toContain('m=audio 20000 RTP/AVP 8 13 101');
    expect(text).toContain('a=rtpmap:13 CN/8000');
    const dyn = readOffer(sdp('m=audio 4000 RTP/AVP 0 98', 'a=rtpmap:98 CN/8000'), ['PCMU'], true);
    expect(dyn.ok && dyn.offer.cnPayloadType).toBe(98);
  });
});

describe('ptime', () => {
  it('we send at the peer ptime when we can and it respects its maxptime, else 20 ms; the answer says so', () => {
    expect(sendPtime({})).toBe(20);
    expect(sendPtime({ ptime: 10 })).toBe(10);
    expect(sendPtime({ ptime: 30 })).toBe(30);
    expect(sendPtime({ ptime: 40, maxptime: 40 })).toBe(40);
    expect(sendPtime({ ptime: 60, maxptime: 40 })).toBe(20);
    expect(sendPtime({ ptime: 25 })).toBe(20);
    expect(sendPtime({ ptime: 120 })).toBe(20);
    expect(sendPtime({ maxptime: 10 })).toBe(10);
    const { offer, text } = answerTo(sdp('m=audio 4000 RTP/AVP 8', 'a=ptime:30', 'a=maxptime:60'));
    expect(offer).toMatchObject({ ptime: 30, maxptime: 60 });
    expect(text).toContain('a=ptime:30');
  });
});
