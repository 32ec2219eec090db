import { afterEach, describe, expect, it } from 'vitest';
import type { SipMessage } from '../../src/sip/message.js';
import { openUdpSockets, waitFor } from '../support/gateway.js';
import { rawPeerCall, startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';

let h: SipHarness | undefined;
let peer: RawSipPeer | undefined;
afterEach(async () => {
  await h?.stop();
  peer?.close();
  h = undefined;
  peer = undefined;
});

/** A raw-peer call to the gateway (offer on 4002 unless told), ACKed. */
const call = (h: SipHarness, peer: RawSipPeer, opts: { rtpPort?: number; extra?: string[] } = {}) =>
  rawPeerCall(h, peer, { rtpPort: 4002, ...opts });

describe('SIP front policy (raw UDP carrier, real gateway)', () => {
  it('per-trunk call limit: 503 beyond maxCalls, counted from the registry', async () => {
    h = await startSipHarness({
      trunks: [{ name: 't', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', maxCalls: 2 }],
    });
    peer = new RawSipPeer();
    await peer.start();
    await call(h, peer, { rtpPort: 4002 });
    await call(h, peer, { rtpPort: 4004 });
    expect(h.gw.ctx.registry.countActive((c) => c.info.trunk === 't')).toBe(2);
    const callId = newId();
    peer.send(request({ callId, localPort: peer.port, targetPort: h.port, sdp: sdpOffer(4006) }), h.port);
    const r = await peer.waitFor(
      (m) => m.kind === 'response' && m.status >= 300 && m.headers.get('call-id') === callId,
    );
    expect(r.kind === 'response' && `${r.status} ${r.reason}`).toBe('503 Service Unavailable (trunk call limit)');
    expect(h.gw.ctx.registry.size).toBe(2);
  });

  it('the AI transfer_call path sends REFER with Refer-To and reports the 202', async () => {
    h = await startSipHarness();
    peer = new RawSipPeer();
    await peer.start();
    const { call: c } = await call(h, peer);
    await waitFor(() => !!c.transfer, 2000, 'transfer available');
    const session = h.sessions.get(c.id)!;
    const result = session.control.transfer('+250788999000');
    const refer = await peer.waitFor((m) => m.kind === 'request' && m.method === 'REFER', 2000, 'REFER');
    expect(refer.headers.get('refer-to')).toBe('<sip:+250788999000@127.0.0.1>');
    peer.reply(refer, 202, 'Accepted', h.port);
    await expect(result).resolves.toEqual({ ok: true, outcome: 'referred', detail: 'transferred to +250788999000' });
    // A refused transfer is reported to the AI, the call stays up.
    const r2 = session.control.transfer('sip:desk@example.com');
    const refer2 = await peer.waitFor(
      (m) => m.kind === 'request' && m.method === 'REFER' && m !== refer,
      2000,
      'REFER 2',
    );
    peer.reply(refer2, 603, 'Decline', h.port);
    await expect(r2).resolves.toMatchObject({ ok: false, detail: expect.stringContaining('603') as string });
    expect(c.ended).toBe(false);
  });

  it('no RTP for rtpTimeoutSec: the call ends as rtp_timeout and the gateway sends BYE', async () => {
    h = await startSipHarness({ sip: { rtpTimeoutSec: 1 } });
    peer = new RawSipPeer();
    await peer.start();
    const { call: c, callId } = await call(h, peer);
    const bye = await peer.waitFor((m) => m.kind === 'request' && m.method === 'BYE', 4000, 'BYE');
    expect(bye.headers.get('call-id')).toBe(callId);
    expect(bye.headers.get('reason')).toContain('rtp_timeout');
    expect(c.endReason).toMatchObject({ by: 'timeout', cause: 'rtp_timeout' });
    peer.reply(bye, 200, 'OK', h.port);
    await waitFor(() => h!.front.ports.used === 0, 2000, 'ports freed');
  });

  it('refusals with reasons: no common codec 488, Session-Expires below Min-SE 422', async () => {
    h = await startSipHarness({
      trunks: [{ name: 't', allow: ['127.0.0.1/32'], countryCode: '250', codecs: ['PCMA'] }],
    });
    peer = new RawSipPeer();
    await peer.start();
    const send = (sdp: string, extra: string[] = []) => {
      const callId = newId();
      peer!.send(request({ callId, localPort: peer!.port, targetPort: h!.port, sdp, extra }), h!.port);
      return peer!.waitFor((m) => m.kind === 'response' && m.status >= 300 && m.headers.get('call-id') === callId);
    };
    const r1 = await send(sdpOffer(4000, 'sendrecv', '0 101'));
    expect(r1.kind === 'response' && r1.status).toBe(488);
    expect(r1.kind === 'response' && r1.reason).toContain('no common codec');
    const r3 = await send(sdpOffer(4000), ['Session-Expires: 30', 'Supported: timer']);
    expect(r3.kind === 'response' && r3.status).toBe(422);
    expect(r3.headers.get('min-se')).toBe('90');
    expect(h.gw.ctx.registry.size).toBe(0);
    expect(h.front.ports.used).toBe(0);
  });

  it('gateway shutdown BYEs live calls and frees every socket', async () => {
    peer = new RawSipPeer();
    await peer.start();
    h = await startSipHarness();
    const { callId } = await call(h, peer);
    const during = openUdpSockets();
    await h.stop();
    h = undefined;
    const bye = await peer.waitFor((m) => m.kind === 'request' && m.method === 'BYE', 2000, 'BYE');
    expect(bye.headers.get('call-id')).toBe(callId);
    // The SIP socket and the call's RTP/RTCP pair are gone (earlier tests' sockets may close too).
    await waitFor(() => openUdpSockets() <= during - 3, 2000, 'sockets closed');
  });
});

describe('RFC 4028 with the gateway as refresher', () => {
  it('refreshes with UPDATE (the trunk allows it) at half the interval, and ends the call (BYE) when a refresh is refused', async () => {
    h = await startSipHarness({ sip: { minSessionExpiresSec: 2 } });
    peer = new RawSipPeer();
    await peer.start();
    const p = peer;
    const {
      callId,
      ok,
      call: c,
    } = await call(h, p, {
      rtpPort: 4010,
      extra: ['Session-Expires: 2;refresher=uas', 'Supported: timer', 'Allow: INVITE, ACK, BYE, UPDATE'],
    });
    expect(ok.headers.get('session-expires')).toBe('2;refresher=uas');
    const t0 = Date.now();
    const isUpdate = (n: number) => (m: SipMessage) =>
      m.kind === 'request' &&
      m.method === 'UPDATE' &&
      m.headers.get('call-id') === callId &&
      !!m.headers.get('cseq')?.startsWith(String(n));
    const first = await p.waitFor(
      (m) => m.kind === 'request' && m.method === 'UPDATE' && m.headers.get('call-id') === callId,
      3000,
      'first UPDATE',
    );
    expect(Date.now() - t0).toBeGreaterThan(700); // ~1 s: half of 2 s
    // We send it and stay the refresher: refresher=uac (RFC 4028 §7.4, relative to this request).
    expect(first.headers.get('session-expires')).toBe('2;refresher=uac');
    p.reply(first, 200, 'OK', h.port);
    const firstCseq = Number(first.headers.get('cseq')!.split(' ')[0]);
    const second = await p.waitFor(isUpdate(firstCseq + 1), 3000, 'second UPDATE');
    expect(c.ended).toBe(false); // the answered refresh kept the call up
    p.reply(second, 405, 'Method Not Allowed', h.port);
    const bye = await p.waitFor(
      (m) => m.kind === 'request' && m.method === 'BYE' && m.headers.get('call-id') === callId,
      3000,
      'BYE',
    );
    p.reply(bye, 200, 'OK', h.port);
    await waitFor(() => c.ended, 3000, 'call end');
    expect(c.endReason).toMatchObject({ by: 'timeout', cause: 'session_expired' });
  });
});
