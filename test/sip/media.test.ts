import { createSocket, type Socket } from 'node:dgram';
import alawmulaw from 'alawmulaw';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { tagOf, type SipMessage } from '../../src/sip/message.js';
import { buildRtp, parseRtp, type ParsedRtp } from '../../src/sip/rtp.js';
import { dominantFrequency, rmsOf } from '../support/audio.js';
import { openUdpSockets, sleep, waitFor } from '../support/gateway.js';
import { startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { newId, RawSipPeer, request } from '../peers/sip/udp-peer.js';

/**
 * Carrier media against the real gateway: a raw SIP peer for signalling and a raw UDP socket for
 * RTP, so packet sizes, timing, hold and hostile senders are exactly what the test says.
 */
let h: SipHarness | undefined;
let peer: RawSipPeer | undefined;
const sockets: Socket[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  await h?.stop();
  peer?.close();
  for (const s of sockets.splice(0)) s.close();
  h = undefined;
  peer = undefined;
});

interface RtpSocket {
  sock: Socket;
  port: number;
  got: ParsedRtp[];
}

async function rtpSocket(ip = '127.0.0.1', port = 0): Promise<RtpSocket> {
  const sock = createSocket(ip.includes(':') ? 'udp6' : 'udp4');
  const got: ParsedRtp[] = [];
  sock.on('message', (b) => {
    const p = parseRtp(b);
    if (p.ok) got.push(p.pkt);
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, ip, () => resolve());
  });
  sockets.push(sock);
  return { sock, port: sock.address().port, got };
}

function offerSdp(rtpPort: number, opts: { ptime?: number; address?: string; extra?: string[]; codecs?: string } = {}) {
  const ip = opts.address?.includes(':') ? 'IP6' : 'IP4';
  return [
    'v=0',
    'o=carrier 1 1 IN IP4 127.0.0.1',
    's=-',
    `c=IN ${ip} ${opts.address ?? '127.0.0.1'}`,
    't=0 0',
    `m=audio ${rtpPort} RTP/AVP ${opts.codecs ?? '8 101 13'}`,
    'a=rtpmap:8 PCMA/8000',
    'a=rtpmap:101 telephone-event/8000',
    'a=fmtp:101 0-16',
    ...(opts.ptime ? [`a=ptime:${opts.ptime}`] : []),
    ...(opts.extra ?? []),
    '',
  ].join('\r\n');
}

interface Dialog {
  callId: string;
  toTag: string;
  answer: string;
  gwRtpPort: number;
  call: Call;
  cseq: number;
}

async function placeCall(sdp: string): Promise<Dialog> {
  const callId = newId();
  const created = new Promise<Call>((r) => h!.gw.ctx.registry.once('created', r));
  peer!.send(request({ callId, localPort: peer!.port, targetPort: h!.port, sdp }), h!.port);
  const ok = await peer!.waitFor(
    (m) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId,
    3000,
    '200',
  );
  const toTag = tagOf(ok.headers.get('to'))!;
  peer!.send(request({ callId, method: 'ACK', toTag, localPort: peer!.port, targetPort: h!.port }), h!.port);
  const gwRtpPort = Number(/m=audio (\d+)/.exec(ok.body)![1]);
  return { callId, toTag, answer: ok.body, gwRtpPort, call: await created, cseq: 1 };
}

/** A re-INVITE in the dialog; resolves with the 200's SDP once ACKed. */
async function reinvite(d: Dialog, sdp: string): Promise<string> {
  d.cseq++;
  const cseq = d.cseq;
  const isOk = (m: SipMessage) =>
    m.kind === 'response' &&
    m.status === 200 &&
    m.headers.get('call-id') === d.callId &&
    m.headers.get('cseq') === `${cseq} INVITE`;
  peer!.send(
    request({ callId: d.callId, cseq, toTag: d.toTag, localPort: peer!.port, targetPort: h!.port, sdp }),
    h!.port,
  );
  const ok = await peer!.waitFor(isOk, 3000, `200 to re-INVITE ${cseq}`);
  peer!.send(
    request({ callId: d.callId, cseq, method: 'ACK', toTag: d.toTag, localPort: peer!.port, targetPort: h!.port }),
    h!.port,
  );
  return ok.body;
}

/** PCMA packets of a continuous tone at `ptimeMs`, paced in real time, until stopped. */
function playTone(
  from: RtpSocket,
  to: number,
  ptimeMs: number,
  freq: number,
  opts: { ssrc?: number; host?: string } = {},
) {
  const bytes = ptimeMs * 8;
  let n = 0;
  const timer = setInterval(() => {
    const pcm = new Int16Array(bytes);
    for (let i = 0; i < bytes; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * freq * (n * bytes + i)) / 8000));
    const pkt = buildRtp(
      {
        payloadType: 8,
        marker: n === 0,
        seq: n & 0xffff,
        timestamp: (5000 + n * bytes) >>> 0,
        ssrc: opts.ssrc ?? 0x1234,
      },
      Buffer.from(alawmulaw.alaw.encode(pcm)),
    );
    from.sock.send(pkt, to, opts.host ?? '127.0.0.1');
    n++;
  }, ptimeMs);
  return { stop: () => clearInterval(timer), sent: () => n };
}

const decode = (pkts: ParsedRtp[]) => Int16Array.from(pkts.flatMap((p) => [...alawmulaw.alaw.decode(p.payload)]));
const dbfs = (x: Int16Array) => 20 * Math.log10(Math.max(1, rmsOf(x)) / 32767);

describe('packetisation: 10, 30 and 40 ms carriers', () => {
  it.each([10, 30, 40])(
    'a=ptime:%i — the caller tone reaches the AI, the AI tone comes back in packets of that ptime',
    async (ptime) => {
      h = await startSipHarness();
      peer = new RawSipPeer();
      await peer.start();
      const rtp = await rtpSocket();
      const d = await placeCall(offerSdp(rtp.port, { ptime }));
      expect(d.answer).toContain(`a=ptime:${ptime}`);
      const tone = playTone(rtp, d.gwRtpPort, ptime, 1000);
      await waitFor(() => tone.sent() * ptime >= 1500 && rtp.got.length * ptime >= 1000, 5000, 'audio both ways');
      tone.stop();
      const heard = h.sessions.get(d.call.id)!.heardPcm(10);
      expect(heard.length).toBeGreaterThan(4000);
      expect(Math.abs(dominantFrequency(heard, 8000) - 1000)).toBeLessThan(20);
      const audio = rtp.got.filter((p) => p.payloadType === 8);
      expect(new Set(audio.map((p) => p.payload.length))).toEqual(new Set([ptime * 8]));
      for (let i = 1; i < audio.length; i++)
        expect((audio[i]!.timestamp - audio[i - 1]!.timestamp) >>> 0).toBe(ptime * 8);
      expect(Math.abs(dominantFrequency(decode(audio.slice(5)), 8000) - 440)).toBeLessThan(10);
    },
  );
});

describe('silence and hold do not end calls', () => {
  it('CN (PT 13) during silence for longer than the RTP timeout: the call stays up, the AI hears quiet noise', async () => {
    h = await startSipHarness({ sip: { rtpTimeoutSec: 1 } });
    peer = new RawSipPeer();
    await peer.start();
    const rtp = await rtpSocket();
    const d = await placeCall(offerSdp(rtp.port, { ptime: 20 }));
    expect(d.answer).toMatch(/m=audio \d+ RTP\/AVP 8 13 101/);
    const tone = playTone(rtp, d.gwRtpPort, 20, 1000);
    const session = h.sessions.get(d.call.id)!;
    await waitFor(() => session.heard.filter((f) => dbfs(f) > -30).length >= 10, 5000, 'the tone at the AI');
    tone.stop();
    const heardBefore = session.heard.length;
    // Silence suppression: one CN packet now and then (level 60 dBov), no audio for 2.7 s. Every
    // 300 ms against a 1 s timeout: a stall on a loaded box cannot read as silence.
    for (let k = 0; k < 9; k++) {
      rtp.sock.send(
        buildRtp({ payloadType: 13, marker: false, seq: 100 + k, timestamp: 9000, ssrc: 0x1234 }, Buffer.from([60])),
        d.gwRtpPort,
        '127.0.0.1',
      );
      await sleep(300);
    }
    expect(d.call.ended).toBe(false);
    expect(peer.received.some((r) => r.msg.kind === 'request' && r.msg.method === 'BYE')).toBe(false);
    const during = session.heard.slice(heardBefore + 15);
    expect(during.length).toBeGreaterThan(50); // the AI keeps getting frames (its VAD needs them)
    const level = dbfs(Int16Array.from(during.flatMap((f) => [...f])));
    expect(level).toBeLessThan(-50);
    expect(level).toBeGreaterThan(-70);
  });

  it('c=0.0.0.0 hold for longer than the RTP timeout: call up, nothing sent to 0.0.0.0; unhold resumes audio both ways', async () => {
    h = await startSipHarness({ sip: { rtpTimeoutSec: 1 } });
    peer = new RawSipPeer();
    await peer.start();
    const rtp = await rtpSocket();
    const d = await placeCall(offerSdp(rtp.port));
    let tone = playTone(rtp, d.gwRtpPort, 20, 1000);
    await waitFor(() => rtp.got.length > 10, 3000, 'AI audio before hold');
    tone.stop();
    const held = await reinvite(d, offerSdp(rtp.port, { address: '0.0.0.0' }));
    expect(held).toContain('a=recvonly');
    await sleep(200); // frames already in flight before the hold land first
    const before = rtp.got.length;
    await sleep(2500);
    expect(d.call.ended).toBe(false);
    expect(rtp.got.length).toBe(before); // the gateway sent nothing while held
    const resumed = await reinvite(d, offerSdp(rtp.port));
    expect(resumed).toContain('a=sendrecv');
    const heardBefore = h.sessions.get(d.call.id)!.heard.length;
    tone = playTone(rtp, d.gwRtpPort, 20, 1200);
    await waitFor(() => rtp.got.length > before + 20, 5000, 'AI audio after unhold');
    await waitFor(() => h!.sessions.get(d.call.id)!.heard.length >= heardBefore + 50, 5000, '1 s heard after unhold');
    tone.stop();
    const heard = Int16Array.from(
      h.sessions
        .get(d.call.id)!
        .heard.slice(heardBefore + 10)
        .flatMap((f) => [...f]),
    );
    expect(Math.abs(dominantFrequency(heard, 8000) - 1200)).toBeLessThan(20);
    expect(d.call.ended).toBe(false);
  });
});

describe('hostile media (issue 12)', () => {
  it('RTP spray at the whole RTP range from ordinary ports and from port 65535: the call keeps its audio both ways, the spray is counted as foreign, the process lives past the RTCP interval', async () => {
    h = await startSipHarness(); // trunk allow (and so mediaAllow) = 127.0.0.1/32
    peer = new RawSipPeer();
    await peer.start();
    const rtp = await rtpSocket();
    const d = await placeCall(offerSdp(rtp.port));
    const tone = playTone(rtp, d.gwRtpPort, 20, 1000);
    await waitFor(() => rtp.got.length > 5, 3000, 'call audio');
    const sprayers = [await rtpSocket('127.0.0.2')];
    try {
      sprayers.push(await rtpSocket('127.0.0.2', 65535));
    } catch {
      // 65535 busy on this machine: the ordinary-port sprayer still runs
    }
    const { rtpPortMin, rtpPortMax } = h.gw.ctx.config.sip;
    const spray = new Int16Array(160).map((_, i) => Math.round(12000 * Math.sin((2 * Math.PI * 3000 * i) / 8000)));
    const payload = Buffer.from(alawmulaw.alaw.encode(spray));
    let seq = 0;
    const sprayTimer = setInterval(() => {
      for (const s of sprayers) {
        const pkt = buildRtp(
          { payloadType: 8, marker: false, seq: seq++ & 0xffff, timestamp: seq * 160, ssrc: 666 },
          payload,
        );
        for (let port = rtpPortMin; port <= rtpPortMax; port++) s.sock.send(pkt, port, '127.0.0.1');
        for (let i = 0; i < 5; i++) s.sock.send(pkt, d.gwRtpPort, '127.0.0.1'); // and hard at the live call
      }
    }, 100);
    const heardFrom = h.sessions.get(d.call.id)!.heard.length;
    const leg = h.front.legFor(d.callId)!;
    // Past the 5 s RTCP interval: with RTCP to port 65536 this used to throw and kill the process.
    await waitFor(() => leg.counters.rtcpSent >= 1, 8000, 'an RTCP report sent during the spray');
    clearInterval(sprayTimer);
    tone.stop();
    expect(leg.counters.foreign).toBeGreaterThan(100);
    expect(leg.counters.relatched).toBe(0);
    expect(leg.remoteAddress).toBe(`127.0.0.1:${rtp.port}`);
    for (const s of sprayers) expect(s.got).toHaveLength(0); // none of the call's audio went to a sprayer
    const heard = Int16Array.from(
      h.sessions
        .get(d.call.id)!
        .heard.slice(heardFrom + 5)
        .flatMap((f) => [...f]),
    );
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000)).toBeLessThan(20);
    expect(Math.abs(dominantFrequency(decode(rtp.got.slice(-100)), 8000) - 440)).toBeLessThan(10);
    expect(d.call.ended).toBe(false);
  }, 20_000);

  it('SDP with a=rtcp:0 or port 70000: a precise 488, no call, and the gateway keeps answering', async () => {
    h = await startSipHarness();
    peer = new RawSipPeer();
    await peer.start();
    const refused = async (sdp: string) => {
      const callId = newId();
      peer!.send(request({ callId, localPort: peer!.port, targetPort: h!.port, sdp }), h!.port);
      const r = await peer!.waitFor(
        (m) => m.kind === 'response' && m.status >= 300 && m.headers.get('call-id') === callId,
      );
      return r.kind === 'response' ? `${r.status} ${r.reason}` : '';
    };
    expect(await refused(offerSdp(4000, { extra: ['a=rtcp:0'] }))).toBe(
      '488 Not Acceptable Here (a=rtcp port 0 out of range)',
    );
    expect(await refused(offerSdp(70000))).toBe('488 Not Acceptable Here (RTP port 70000 out of range)');
    expect(await refused(offerSdp(4000, { extra: ['a=rtcp:70000'] }))).toBe(
      '488 Not Acceptable Here (a=rtcp port 70000 out of range)',
    );
    expect(h.gw.ctx.registry.size).toBe(0);
    expect(h.front.ports.used).toBe(0);
    const d = await placeCall(offerSdp(4002));
    expect(d.call.ended).toBe(false);
  });

  it('random RTP ports: successive calls do not get predictable, sequential pairs', async () => {
    h = await startSipHarness();
    const ports = [];
    for (let i = 0; i < 8; i++) {
      const p = await h.front.ports.allocate();
      ports.push(p);
    }
    const numbers = ports.map((p) => p.port);
    expect(numbers.every((n) => n % 2 === 0)).toBe(true);
    const steps = numbers.slice(1).map((n, i) => n - numbers[i]!);
    expect(steps.filter((s) => s === 2).length).toBeLessThan(4);
    await Promise.all(ports.map((p) => p.release()));
  });
});

describe('leaks (issue 12)', () => {
  it('a CANCEL while the RTP ports are being allocated leaves no leg timers and no sockets behind', async () => {
    h = await startSipHarness();
    peer = new RawSipPeer();
    await peer.start();
    const socketsBefore = openUdpSockets();
    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    let allocating!: () => void;
    const allocStarted = new Promise<void>((r) => (allocating = r));
    const pool = h.front.ports;
    const allocate = pool.allocate.bind(pool);
    pool.allocate = async (id) => {
      allocating();
      await gate;
      return allocate(id);
    };
    const live = new Set<unknown>();
    const realSet = globalThis.setInterval;
    const realClear = globalThis.clearInterval;
    vi.spyOn(globalThis, 'setInterval').mockImplementation(((fn: () => void, ms?: number) => {
      const t = realSet(fn, ms);
      live.add(t);
      return t;
    }) as typeof setInterval);
    vi.spyOn(globalThis, 'clearInterval').mockImplementation(((t: NodeJS.Timeout) => {
      live.delete(t);
      realClear(t);
    }) as typeof clearInterval);

    const callId = newId();
    const branch = `z9hG4bK${newId()}`;
    const ended = new Promise<Call>((r) => h!.gw.ctx.registry.once('created', (c) => c.once('ended', () => r(c))));
    peer.send(request({ callId, branch, localPort: peer.port, targetPort: h.port, sdp: offerSdp(4000) }), h.port);
    await allocStarted;
    peer.send(request({ callId, branch, method: 'CANCEL', localPort: peer.port, targetPort: h.port }), h.port);
    await peer.waitFor((m) => m.kind === 'response' && m.status === 487, 3000, '487');
    const call = await ended;
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'cancel' });
    openGate();
    await waitFor(() => pool.used === 0 && openUdpSockets() <= socketsBefore, 3000, 'ports and sockets released');
    await sleep(100);
    expect(live.size).toBe(0); // no leg interval (inactivity check, RTCP) left running
    expect(pool.used).toBe(0);
  });
});

describe('IPv6 media', () => {
  it('an IN IP6 offer over IPv4 signalling: answered IN IP6, audio both ways over udp6; without sip.publicAddress6 a precise 488', async () => {
    h = await startSipHarness({ sip: { publicAddress6: '::1' } });
    peer = new RawSipPeer();
    await peer.start();
    const rtp = await rtpSocket('::1');
    const d = await placeCall(offerSdp(rtp.port, { address: '::1' }));
    expect(d.answer).toContain('c=IN IP6 ::1');
    const tone = playTone(rtp, d.gwRtpPort, 20, 1000, { host: '::1' });
    await waitFor(() => tone.sent() >= 60 && rtp.got.length >= 40, 5000, 'audio both ways over IPv6');
    tone.stop();
    expect(Math.abs(dominantFrequency(h.sessions.get(d.call.id)!.heardPcm(10), 8000) - 1000)).toBeLessThan(20);
    expect(Math.abs(dominantFrequency(decode(rtp.got.slice(5)), 8000) - 440)).toBeLessThan(10);
    // A re-INVITE may not move the call's media to IPv4: its sockets are IPv6.
    d.cseq++;
    peer.send(
      request({
        callId: d.callId,
        cseq: d.cseq,
        toTag: d.toTag,
        localPort: peer.port,
        targetPort: h.port,
        sdp: offerSdp(rtp.port),
      }),
      h.port,
    );
    const r = await peer.waitFor(
      (m) => m.kind === 'response' && m.status >= 300 && m.headers.get('cseq') === `${d.cseq} INVITE`,
    );
    expect(r.kind === 'response' && `${r.status} ${r.reason}`).toBe(
      '488 Not Acceptable Here (IPv4 media not available)',
    );
    await h.stop();

    h = await startSipHarness();
    const callId = newId();
    peer.send(
      request({ callId, localPort: peer.port, targetPort: h.port, sdp: offerSdp(4000, { address: '::1' }) }),
      h.port,
    );
    const refused = await peer.waitFor(
      (m) => m.kind === 'response' && m.status >= 300 && m.headers.get('call-id') === callId,
    );
    expect(refused.kind === 'response' && `${refused.status} ${refused.reason}`).toBe(
      '488 Not Acceptable Here (IPv6 media not available)',
    );
  });
});
