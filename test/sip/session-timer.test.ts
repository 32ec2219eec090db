import { afterEach, describe, expect, it } from 'vitest';
import type { SipMessage } from '../../src/sip/message.js';
import { MAX_SESSION_EXPIRES_SEC, negotiateAsUas, termsFromUacResponse } from '../../src/sip/session-timer.js';
import { waitFor } from '../support/gateway.js';
import { rawPeerCall, startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';

let h: SipHarness | undefined;
let peer: RawSipPeer | undefined;
afterEach(async () => {
  await h?.stop();
  peer?.close();
  h = undefined;
  peer = undefined;
});

const headersOf = (o: Record<string, string>) => (n: string) => o[n];

describe('RFC 4028 negotiation (pure)', () => {
  const opts = { minSec: 90, canRefresh: true };
  it('no refresher and no Supported: timer → we are the refresher (uas), no Require', () => {
    const r = negotiateAsUas(headersOf({ 'session-expires': '1800' }), opts);
    expect(r).toEqual({
      terms: { interval: 1800, weRefresh: true },
      headers: { 'session-expires': '1800;refresher=uas' },
    });
  });
  it('Supported: timer without refresher → the UAC refreshes, Require: timer', () => {
    const r = negotiateAsUas(headersOf({ 'session-expires': '1800', supported: 'replaces, timer' }), opts);
    expect(r).toMatchObject({ headers: { 'session-expires': '1800;refresher=uac', require: 'timer' } });
  });
  it('huge intervals are clamped to a day (never overflows setTimeout); below Min-SE is 422', () => {
    const r = negotiateAsUas(headersOf({ 'session-expires': '4294967296;refresher=uac', supported: 'timer' }), opts);
    expect(r).toMatchObject({ terms: { interval: MAX_SESSION_EXPIRES_SEC } });
    expect(negotiateAsUas(headersOf({ 'session-expires': '30' }), opts)).toEqual({ tooSmall: true, minSe: 90 });
    expect(negotiateAsUas(headersOf({ 'session-expires': 'garbage' }), opts)).toBeUndefined();
  });
  it('an engine that cannot refresh never promises refresher=uas', () => {
    const cant = { minSec: 90, canRefresh: false };
    const asked = negotiateAsUas(headersOf({ 'session-expires': '600;refresher=uas', supported: 'timer' }), cant);
    expect(asked).toMatchObject({ headers: { 'session-expires': '600;refresher=uac' } });
    expect(negotiateAsUas(headersOf({ 'session-expires': '600' }), cant)).toBeUndefined();
  });
  it('UAC side: the 2xx says who refreshes', () => {
    expect(termsFromUacResponse(headersOf({ 'session-expires': '900;refresher=uac' }))).toEqual({
      interval: 900,
      weRefresh: true,
    });
    expect(termsFromUacResponse(headersOf({ 'session-expires': '900;refresher=uas' }))?.weRefresh).toBe(false);
    expect(termsFromUacResponse(headersOf({}))).toBeUndefined();
  });
});

const call = (h: SipHarness, peer: RawSipPeer, extra: string[]) => rawPeerCall(h, peer, { rtpPort: 4020, extra });

const isReq = (method: string, callId: string) => (m: SipMessage) =>
  m.kind === 'request' && m.method === method && m.headers.get('call-id') === callId;

describe('RFC 4028 on the wire (raw UDP carrier, real gateway)', () => {
  it('a trunk without timer support and without UPDATE in Allow: we refresh with a re-INVITE carrying our SDP', async () => {
    h = await startSipHarness({ sip: { minSessionExpiresSec: 2 } });
    peer = new RawSipPeer();
    await peer.start();
    const { callId, ok, call: c } = await call(h, peer, ['Session-Expires: 2']);
    expect(ok.headers.get('session-expires')).toBe('2;refresher=uas');
    expect(ok.headers.get('require')).toBeUndefined();
    const reinvite = await peer.waitFor(isReq('INVITE', callId), 3000, 're-INVITE');
    expect(reinvite.headers.get('session-expires')).toBe('2;refresher=uac');
    expect(reinvite.body).toContain('m=audio');
    const cseq = Number(reinvite.headers.get('cseq')!.split(' ')[0]);
    // 200 with our SDP answer, echoing the request's headers plus a Contact.
    const echo = ['via', 'from', 'to', 'call-id', 'cseq'].map((n) => `${n}: ${reinvite.headers.get(n)}`);
    const body = sdpOffer(4020);
    const ok200 = [
      'SIP/2.0 200 OK',
      ...echo,
      `Contact: <sip:carrier@127.0.0.1:${peer.port}>`,
      'Session-Expires: 2;refresher=uac',
      'Content-Type: application/sdp',
      `Content-Length: ${body.length}`,
      '',
      body,
    ].join('\r\n');
    peer.send(ok200, h.port);
    const ack = await peer.waitFor(isReq('ACK', callId), 2000, 'ACK for the re-INVITE 200');
    expect(ack.headers.get('cseq')).toBe(`${cseq} ACK`);
    // Our ACK "lost": the retransmitted 200 is ACKed again (RFC 3261 §13.2.2.4).
    peer.send(ok200, h.port);
    await waitFor(() => peer!.received.filter((r) => isReq('ACK', callId)(r.msg)).length === 2, 2000, 'second ACK');
    // The next refresh comes on schedule: the call stays up.
    await peer.waitFor(
      (m) => isReq('INVITE', callId)(m) && m.headers.get('cseq') === `${cseq + 1} INVITE`,
      3000,
      'second re-INVITE',
    );
    expect(c.ended).toBe(false);
  });

  it('the trunk refreshes: the 2xx to its UPDATE carries Session-Expires and Require: timer; no refresh → our BYE before expiry', async () => {
    h = await startSipHarness({ sip: { minSessionExpiresSec: 3 } });
    peer = new RawSipPeer();
    await peer.start();
    const {
      callId,
      toTag,
      ok,
      call: c,
    } = await call(h, peer, ['Session-Expires: 3;refresher=uac', 'Supported: timer']);
    expect(ok.headers.get('session-expires')).toBe('3;refresher=uac');
    expect(ok.headers.get('require')).toBe('timer');
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 1200));
    peer.send(
      request({
        callId,
        method: 'UPDATE',
        cseq: 2,
        toTag,
        localPort: peer.port,
        targetPort: h.port,
        extra: ['Session-Expires: 3;refresher=uac', 'Supported: timer'],
      }),
      h.port,
    );
    const updOk = await peer.waitFor(
      (m) => m.kind === 'response' && m.status === 200 && m.headers.get('cseq') === '2 UPDATE',
      2000,
      '200 to UPDATE',
    );
    expect(updOk.headers.get('session-expires')).toBe('3;refresher=uac');
    expect(updOk.headers.get('require')).toBe('timer');
    expect(updOk.body).toBe(''); // RFC 3311: no offer, no answer
    // No further refresh: BYE at 3 − min(32, 3/3) = 2 s after the last refresh, not at the first interval.
    const bye = await peer.waitFor(isReq('BYE', callId), 5000, 'BYE');
    const after = Date.now() - t0;
    expect(after).toBeGreaterThan(2800); // the UPDATE restarted the clock (1.2 s + 2 s)
    expect(bye.headers.get('reason')).toContain('session_expired');
    peer.reply(bye, 200, 'OK', h.port);
    await waitFor(() => c.ended, 2000, 'ended');
    expect(c.endReason).toMatchObject({ by: 'timeout', cause: 'session_expired' });
  });

  it('Session-Expires of 2^32 s is clamped, not an instant hang-up', async () => {
    h = await startSipHarness();
    peer = new RawSipPeer();
    await peer.start();
    const { ok, call: c } = await call(h, peer, ['Session-Expires: 4294967296;refresher=uac', 'Supported: timer']);
    expect(ok.headers.get('session-expires')).toBe(`${MAX_SESSION_EXPIRES_SEC};refresher=uac`);
    await new Promise((r) => setTimeout(r, 500));
    expect(c.ended).toBe(false);
  });
});

describe('RFC 4028 on outbound legs (dial-out / OpenAI SIP route share the SIP dialer)', () => {
  async function dialOut(se: string) {
    peer = new RawSipPeer();
    await peer.start();
    const p = peer;
    h = await startSipHarness({
      trunks: [
        {
          name: 'out',
          allow: ['127.0.0.1/32'],
          countryCode: '250',
          nationalPrefix: '0',
          dialUri: `sip:127.0.0.1:${p.port};transport=udp`,
        },
      ],
    });
    const call = await h.gw.ctx.dialers.get('sip')!({ front: 'sip', to: '+250788123456', trunk: 'out' });
    const inv = await p.waitFor((m) => m.kind === 'request' && m.method === 'INVITE', 3000, 'INVITE');
    const callId = inv.headers.get('call-id')!;
    const echo = ['via', 'from', 'call-id', 'cseq'].map((n) => `${n}: ${inv.headers.get(n)}`);
    const body = sdpOffer(4030);
    p.send(
      [
        'SIP/2.0 200 OK',
        ...echo,
        `To: ${inv.headers.get('to')};tag=far`,
        `Contact: <sip:phone@127.0.0.1:${p.port}>`,
        'Allow: INVITE, ACK, BYE, UPDATE',
        `Session-Expires: ${se}`,
        'Require: timer',
        'Content-Type: application/sdp',
        `Content-Length: ${body.length}`,
        '',
        body,
      ].join('\r\n'),
      h.port,
    );
    await p.waitFor(isReq('ACK', callId), 2000, 'ACK');
    return { call, callId, p };
  }

  it('the far end makes us the refresher (refresher=uac in its 2xx): we refresh with UPDATE at half the interval', async () => {
    const { call, callId, p } = await dialOut('2;refresher=uac');
    const t0 = Date.now();
    const first = await p.waitFor(isReq('UPDATE', callId), 3000, 'first UPDATE');
    expect(Date.now() - t0).toBeGreaterThan(700);
    expect(first.headers.get('session-expires')).toBe('2;refresher=uac');
    p.reply(first, 200, 'OK', h!.port);
    await p.waitFor((m) => isReq('UPDATE', callId)(m) && m !== first, 3000, 'second UPDATE');
    expect(call.ended).toBe(false);
  });

  it('the far end refreshes (refresher=uas) but stops: we BYE before expiry, the call ends as session_expired', async () => {
    const { call, callId, p } = await dialOut('2;refresher=uas');
    const bye = await p.waitFor(isReq('BYE', callId), 4000, 'BYE');
    expect(bye.headers.get('reason')).toContain('session_expired');
    p.reply(bye, 200, 'OK', h!.port);
    await waitFor(() => call.ended, 2000, 'ended');
    expect(call.endReason).toMatchObject({ by: 'timeout', cause: 'session_expired' });
  });
});
