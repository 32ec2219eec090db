import { createSocket, type Socket } from 'node:dgram';
import alawmulaw from 'alawmulaw';
import { afterEach, describe, expect, it } from 'vitest';
import { testLogger } from '../../src/core/logger.js';
import type { HangupReason } from '../../src/core/media-leg.js';
import { AddressSet } from '../../src/sip/media-source.js';
import { buildRtp, parseRtp, RtpPortPool } from '../../src/sip/rtp.js';
import { RtpLeg } from '../../src/sip/rtp-leg.js';
import type { AudioOffer } from '../../src/sip/sdp.js';
import { dominantFrequency, rmsOf } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { leasePortRange } from '../support/ports.js';

const [base] = leasePortRange(200);
const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function udp(port = 0, ip = '127.0.0.1'): Promise<Socket & { got: Buffer[] }> {
  const s = createSocket('udp4') as Socket & { got: Buffer[] };
  s.got = [];
  s.on('message', (b) => s.got.push(b));
  await new Promise<void>((r, j) => {
    s.once('error', j);
    s.bind(port, ip, () => r());
  });
  cleanup.push(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

async function makeLeg(opts: {
  sdpPort: number;
  timeoutMs?: number;
  rtcpIntervalMs?: number;
  dtmf?: boolean;
  offer?: Partial<AudioOffer>;
  mediaAllow?: string[];
}) {
  const pool = new RtpPortPool('127.0.0.1', base, base + 39);
  const ports = await pool.allocate();
  const offer: AudioOffer = {
    address: '127.0.0.1',
    port: opts.sdpPort,
    rtcpPort: opts.sdpPort + 1,
    codec: 'PCMA',
    payloadType: 8,
    dtmfPayloadType: opts.dtmf === false ? undefined : 101,
    direction: 'sendrecv',
    ...opts.offer,
  };
  const closed: HangupReason[] = [];
  const leg = new RtpLeg({
    callId: 'c1',
    log: testLogger(),
    ports,
    offer,
    direction: 'sendrecv',
    timeoutMs: opts.timeoutMs ?? 5000,
    rtcpIntervalMs: opts.rtcpIntervalMs,
    mediaAllow: opts.mediaAllow ? new AddressSet(opts.mediaAllow) : undefined,
    onClose: async (r) => void closed.push(r),
  });
  cleanup.push(() => leg.close({ by: 'gateway', cause: 'test' }));
  return { pool, leg, closed };
}

const tonePkt = (seq: number, freq = 1000, pt = 8, ssrc = 77) => {
  const pcm = new Int16Array(160);
  for (let i = 0; i < 160; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * freq * (seq * 160 + i)) / 8000));
  return buildRtp(
    { payloadType: pt, marker: false, seq, timestamp: seq * 160, ssrc },
    Buffer.from(alawmulaw.alaw.encode(pcm)),
  );
};

/** Every frame the leg has ready, decoded. */
function readAll(leg: RtpLeg, max = 200): Int16Array {
  const out: number[] = [];
  for (let i = 0; i < max; i++) {
    const f = leg.readFrame();
    if (f) out.push(...alawmulaw.alaw.decode(f));
  }
  return Int16Array.from(out);
}

describe('RTP leg (G.711 over UDP)', () => {
  it('latches onto the real source, reorders through the jitter buffer, counts and drops bad packets', async () => {
    const decoy = await udp();
    const carrier = await udp();
    const { leg } = await makeLeg({ sdpPort: decoy.address().port });
    expect(leg.format.codec).toBe('pcma');
    let started = 0;
    leg.on('started', () => started++);
    const order = [0, 1, 3, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
    for (const i of order) carrier.send(tonePkt(100 + i), leg.localPort, '127.0.0.1');
    carrier.send(Buffer.from([0x80, 8, 0]), leg.localPort, '127.0.0.1'); // short
    carrier.send(Buffer.alloc(172, 0x40), leg.localPort, '127.0.0.1'); // version 1
    carrier.send(tonePkt(200, 1000, 96), leg.localPort, '127.0.0.1'); // unknown PT
    const intruder = await udp();
    intruder.send(tonePkt(300), leg.localPort, '127.0.0.1'); // after latch: ignored
    await waitFor(() => leg.quality().packetsReceived === 20 && leg.counters.foreign === 1, 5000, 'all packets');
    expect(started).toBe(1);
    const frames: Int16Array[] = [];
    for (let i = 0; i < 20; i++) {
      const f = leg.readFrame();
      if (f) frames.push(Int16Array.from(alawmulaw.alaw.decode(f)));
    }
    expect(frames.length).toBeGreaterThanOrEqual(18);
    const all = new Int16Array(frames.length * 160);
    frames.forEach((f, i) => all.set(f, i * 160));
    expect(Math.abs(dominantFrequency(all, 8000) - 1000)).toBeLessThan(20);
    const q = leg.quality();
    expect(q.rtp).toMatchObject({ short: 1, badVersion: 1, unknownPt: 1, foreign: 1 });
    expect(q.jitter?.reordered).toBe(1);
    // Our audio goes to where the carrier sends from, not the SDP address.
    leg.writeFrame(Buffer.alloc(160, 0xd5));
    await waitFor(() => carrier.got.length === 1, 3000, 'latched send');
    expect(decoy.got).toHaveLength(0);
    const sent = parseRtp(carrier.got[0]!);
    expect(sent.ok && sent.pkt).toMatchObject({ payloadType: 8, marker: true });
  });

  it('RFC 4733 DTMF: one dtmf event per digit (end packet repeated), and sendDtmf emits a proper event', async () => {
    const carrier = await udp();
    const { leg } = await makeLeg({ sdpPort: carrier.address().port });
    const digits: [string, number][] = [];
    leg.on('dtmf', (d, ms) => digits.push([d, ms]));
    const ev = (seq: number, ts: number, event: number, end: boolean, dur: number) =>
      buildRtp(
        { payloadType: 101, marker: false, seq, timestamp: ts, ssrc: 77 },
        Buffer.from([event, end ? 0x8a : 0x0a, dur >> 8, dur & 0xff]),
      );
    let seq = 1;
    for (const [event, ts] of [
      [11, 8000],
      [3, 16000],
    ] as const) {
      for (let k = 1; k <= 4; k++) carrier.send(ev(seq++, ts, event, false, k * 160), leg.localPort, '127.0.0.1');
      for (let k = 0; k < 3; k++) carrier.send(ev(seq++, ts, event, true, 800), leg.localPort, '127.0.0.1');
    }
    await waitFor(() => digits.length === 2, 3000, 'digits');
    await sleep(50);
    expect(digits).toEqual([
      ['#', 100],
      ['3', 100],
    ]);

    leg.sendDtmf('9', 100);
    for (let i = 0; i < 12; i++) leg.writeFrame(Buffer.alloc(160, 0xd5));
    await waitFor(() => carrier.got.length >= 12, 3000, 'sent packets');
    const pkts = carrier.got.map((b) => parseRtp(b)).flatMap((p) => (p.ok ? [p.pkt] : []));
    const dtmf = pkts.filter((p) => p.payloadType === 101);
    expect(dtmf).toHaveLength(5 + 3);
    expect(new Set(dtmf.map((p) => p.timestamp)).size).toBe(1);
    expect(dtmf[0]!.marker).toBe(true);
    expect(dtmf.filter((p) => p.payload[1]! & 0x80)).toHaveLength(3);
    expect(dtmf.every((p) => p.payload[0] === 9)).toBe(true);
    expect(pkts.filter((p) => p.payloadType === 8).length).toBe(4); // audio resumes after the event
  });

  it('sends RTCP SR with a report block to port+1, ends with rtp_timeout when the carrier goes silent, and frees its ports', async () => {
    const carrierPort = base + 60 + Math.floor(Math.random() * 10) * 2;
    const carrier = await udp(carrierPort);
    const carrierRtcp = await udp(carrierPort + 1);
    const { leg, pool } = await makeLeg({ sdpPort: carrierPort, timeoutMs: 400, rtcpIntervalMs: 100 });
    const hangups: HangupReason[] = [];
    leg.on('hangup', (r) => hangups.push(r));
    for (let i = 0; i < 5; i++) carrier.send(tonePkt(i), leg.localPort, '127.0.0.1');
    for (let i = 0; i < 5; i++) leg.writeFrame(Buffer.alloc(160, 0xd5));
    await waitFor(() => carrierRtcp.got.length > 0, 3000, 'RTCP');
    const sr = carrierRtcp.got[0]!;
    expect(sr[1]).toBe(200);
    expect(sr[0]! & 0x1f).toBe(1);
    expect(sr.readUInt32BE(20)).toBe(5); // packet count
    expect(sr.readUInt32BE(28)).toBe(77); // report about the carrier's SSRC
    await waitFor(() => hangups.length > 0, 5000, 'rtp timeout');
    expect(hangups[0]).toMatchObject({ by: 'timeout', cause: 'rtp_timeout' });
    expect(pool.used).toBe(1);
    await leg.close(hangups[0]!);
    expect(pool.used).toBe(0);
    const again = await pool.allocate();
    await again.release();
  });

  it('hold: no timeout while inactive, no audio sent while the carrier holds us (we answered recvonly)', async () => {
    const carrier = await udp();
    const { leg } = await makeLeg({ sdpPort: carrier.address().port, timeoutMs: 300 });
    const hangups: HangupReason[] = [];
    leg.on('hangup', (r) => hangups.push(r));
    // A control leg with the same timeout and no hold: its rtp_timeout proves the window has passed.
    const controlPeer = await udp();
    const control = await makeLeg({ sdpPort: controlPeer.address().port, timeoutMs: 300 });
    const controlHangups: HangupReason[] = [];
    control.leg.on('hangup', (r) => controlHangups.push(r));
    const offer = {
      address: '127.0.0.1',
      port: carrier.address().port,
      rtcpPort: 1,
      codec: 'PCMA' as const,
      payloadType: 8,
      dtmfPayloadType: 101,
      direction: 'inactive' as const,
    };
    leg.update(offer, 'inactive');
    await waitFor(() => controlHangups.length === 1, 3000, 'the control leg timing out');
    expect(controlHangups[0]).toMatchObject({ cause: 'rtp_timeout' });
    expect(hangups).toHaveLength(0);
    leg.update({ ...offer, direction: 'sendonly' }, 'recvonly');
    leg.writeFrame(Buffer.alloc(160, 0x11)); // while held: must not be sent
    leg.update({ ...offer, direction: 'sendrecv' }, 'sendrecv');
    leg.writeFrame(Buffer.alloc(160, 0xd5));
    // One socket, one path, in order: had the held frame gone out, it would have arrived first.
    await waitFor(() => carrier.got.length >= 1, 3000, 'audio after unhold');
    const first = parseRtp(carrier.got[0]!);
    expect(first.ok && first.pkt.payload.equals(Buffer.alloc(160, 0xd5))).toBe(true);
  });

  it('port pool: even RTP ports, exhaustion is a limit_reached error', async () => {
    const pool = new RtpPortPool('127.0.0.1', base + 100, base + 103);
    const a = await pool.allocate();
    const b = await pool.allocate();
    expect([a.port % 2, b.port % 2]).toEqual([0, 0]);
    await expect(pool.allocate('cX')).rejects.toMatchObject({ code: 'limit_reached', callId: 'cX' });
    await a.release();
    const c = await pool.allocate();
    expect(c.port).toBe(a.port);
    await Promise.all([b.release(), c.release()]);
  });

  it('source policy: media from outside the SDP address/mediaAllow never latches; a quiet source can be replaced inside the set', async () => {
    const carrier = await udp();
    const stranger = await udp(0, '127.0.0.2');
    const { leg } = await makeLeg({ sdpPort: carrier.address().port, mediaAllow: ['127.0.0.3/32'] });
    let started = 0;
    leg.on('started', () => started++);
    for (let i = 0; i < 10; i++) stranger.send(tonePkt(i, 3000), leg.localPort, '127.0.0.1');
    await waitFor(() => leg.counters.foreign === 10, 3000, 'foreign counted');
    expect(started).toBe(0);
    expect(leg.readFrame()).toBeNull();
    leg.writeFrame(Buffer.alloc(160, 0xd5));
    await sleep(50);
    expect(stranger.got).toHaveLength(0); // nothing of ours goes to the stranger

    // The carrier latches; a second sender on the carrier's own address cannot take over while it talks.
    const other = await udp();
    for (let i = 0; i < 20; i++) {
      carrier.send(tonePkt(100 + i, 1000), leg.localPort, '127.0.0.1');
      other.send(tonePkt(500 + i, 3000, 8, 99), leg.localPort, '127.0.0.1');
    }
    await waitFor(() => leg.counters.foreign >= 30, 3000, 'contending sender counted');
    expect(started).toBe(1);
    await waitFor(() => leg.quality().packetsReceived === 20, 3000, "the carrier's 20 packets");
    expect(Math.abs(dominantFrequency(readAll(leg), 8000) - 1000)).toBeLessThan(20);

    // Failover: the carrier goes quiet, media comes from another allowed port with a new SSRC.
    await sleep(400); // longer than the latch's quiet time (a late timer only makes it longer)
    for (let i = 0; i < 20; i++) other.send(tonePkt(700 + i, 2000, 8, 99), leg.localPort, '127.0.0.1');
    await waitFor(() => leg.counters.relatched === 1, 3000, 're-latch');
    await waitFor(() => leg.quality().packetsReceived === 40, 3000, "the new source's 20 packets");
    expect(Math.abs(dominantFrequency(readAll(leg), 8000) - 2000)).toBeLessThan(30);
    leg.writeFrame(Buffer.alloc(160, 0xd5));
    await waitFor(() => other.got.length > 0, 3000, 'our audio follows the re-latch');
  });

  it('a source on port 65535 (RTCP port 65536) and a=rtcp:0 never make a send throw: RTCP is skipped, the process lives', async () => {
    let carrier;
    try {
      carrier = await udp(65535);
    } catch {
      return; // port taken on this machine: nothing to prove here
    }
    const { leg } = await makeLeg({ sdpPort: 65535, rtcpIntervalMs: 30, offer: { rtcpPort: 0 } });
    for (let i = 0; i < 5; i++) carrier.send(tonePkt(i), leg.localPort, '127.0.0.1');
    for (let i = 0; i < 5; i++) leg.writeFrame(Buffer.alloc(160, 0xd5));
    await waitFor(() => leg.counters.sendSkipped >= 3, 5000, 'RTCP sends skipped');
    expect(leg.counters.rtcpSent).toBe(0);
    await waitFor(() => carrier.got.length === 5, 3000, 'RTP still flows to port 65535');
  });

  it('c=0.0.0.0 hold: nothing sent (RTP or RTCP), no timeout; unhold resumes at the old address', async () => {
    const carrier = await udp();
    const carrierRtcp = await udp();
    const { leg } = await makeLeg({
      sdpPort: carrier.address().port,
      timeoutMs: 300,
      rtcpIntervalMs: 50,
      offer: { rtcpPort: carrierRtcp.address().port },
    });
    const hangups: HangupReason[] = [];
    leg.on('hangup', (r) => hangups.push(r));
    leg.writeFrame(Buffer.alloc(160, 0xd5));
    await waitFor(() => carrier.got.length === 1 && carrierRtcp.got.length > 0, 3000, 'media before hold');
    const base: AudioOffer = {
      address: '0.0.0.0',
      port: carrier.address().port,
      rtcpPort: carrier.address().port + 1,
      codec: 'PCMA',
      payloadType: 8,
      dtmfPayloadType: 101,
      direction: 'sendonly',
      nullAddress: true,
    };
    leg.update(base, 'recvonly');
    const rtcpBefore = carrierRtcp.got.length;
    for (let i = 0; i < 10; i++) leg.writeFrame(Buffer.alloc(160, 0xd5));
    await sleep(700);
    expect(hangups).toHaveLength(0);
    expect(carrier.got).toHaveLength(1);
    expect(carrierRtcp.got.length).toBe(rtcpBefore);
    leg.update({ ...base, address: '127.0.0.1', direction: 'sendrecv', nullAddress: false }, 'sendrecv');
    leg.writeFrame(Buffer.alloc(160, 0xd5));
    await waitFor(() => carrier.got.length === 2, 3000, 'audio after unhold');
  });

  it('comfort noise (PT 13) and RTCP keep the call alive; CN plays as quiet noise, not as audio bytes', async () => {
    const carrier = await udp();
    // Keep-alives every 100 ms for twice the timeout: a stall of up to ~500 ms on a loaded box
    // (which also delays the leg's own check) cannot read as silence.
    const { leg } = await makeLeg({ sdpPort: carrier.address().port, timeoutMs: 600 });
    const hangups: HangupReason[] = [];
    leg.on('hangup', (r) => hangups.push(r));
    for (let i = 0; i < 5; i++) carrier.send(tonePkt(i), leg.localPort, '127.0.0.1');
    const cn = (seq: number) =>
      buildRtp({ payloadType: 13, marker: false, seq, timestamp: 800, ssrc: 77 }, Buffer.from([50]));
    for (let k = 0; k < 12; k++) {
      await sleep(100);
      if (k % 2) carrier.send(cn(5 + k), leg.localPort, '127.0.0.1');
      else carrier.send(Buffer.from([0x81, 201, 0, 1, 0, 0, 0, 77]), leg.localPort + 1, '127.0.0.1'); // RTCP RR
    }
    await waitFor(
      () => leg.counters.comfortNoise === 6 && leg.counters.rtcpReceived === 6,
      3000,
      'CN and RTCP counted',
    );
    expect(hangups).toHaveLength(0);
    readAll(leg, 20); // the tone, then concealment
    const noise = readAll(leg, 10);
    expect(noise.length).toBe(1600);
    const db = 20 * Math.log10(rmsOf(noise) / 32767);
    expect(db).toBeGreaterThan(-60);
    expect(db).toBeLessThan(-40);
  });
});
