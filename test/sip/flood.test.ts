import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import type { Logger } from '../../src/core/logger.js';
import { EmbeddedSipEngine, type EmbeddedEngineOptions } from '../../src/sip/embedded.js';
import type { IncomingInvite } from '../../src/sip/engine.js';
import { LogSampler, TokenBuckets } from '../../src/sip/flood.js';
import { tagOf } from '../../src/sip/message.js';
import { dominantFrequency } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { runSipp, startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { EngineRig, RIG_T1 } from '../peers/sip/engine-rig.js';

const T1 = RIG_T1;
let rig: EngineRig | undefined;
let engine: EmbeddedSipEngine | undefined;
let h: SipHarness | undefined;
const peers: RawSipPeer[] = [];
afterEach(async () => {
  await rig?.stop();
  await h?.stop();
  for (const p of peers.splice(0)) p.close();
  rig = engine = undefined;
  h = undefined;
});

/** An engine for which only 127.0.0.1 is a trunk; peers on 127.0.0.2 are strangers. */
async function setup(
  opts: Partial<EmbeddedEngineOptions> = {},
): Promise<{ engine: EmbeddedSipEngine; invites: IncomingInvite[] }> {
  rig = await EngineRig.start({ isKnownSource: (a) => a === '127.0.0.1', ...opts });
  engine = rig.engine;
  return { engine, invites: rig.invites };
}

async function peerOn(ip: string): Promise<RawSipPeer> {
  const p = new RawSipPeer(ip);
  await p.start();
  peers.push(p);
  return p;
}

describe('flood resistance: building blocks', () => {
  it('token buckets: burst of twice the rate, refilled over time, bounded in keys', () => {
    let now = 0;
    const b = new TokenBuckets(2, 3, () => now);
    const takes = (k: string, n: number) => Array.from({ length: n }, () => b.take(k)).filter(Boolean).length;
    expect(takes('a', 10)).toBe(4);
    now += 500; // one token back
    expect(takes('a', 10)).toBe(1);
    for (const k of ['b', 'c', 'd', 'e']) b.take(k);
    expect(b.size).toBe(3);
  });

  it('log sampler: the first warning per window, then one carrying the suppressed count', () => {
    const lines: [Record<string, unknown>, string][] = [];
    const log = { warn: (o: Record<string, unknown>, m: string) => lines.push([o, m]) } as unknown as Logger;
    let now = 0;
    const s = new LogSampler(log, 1000, () => now);
    for (let i = 0; i < 500; i++) s.warn('unknown_source', { i }, 'refused');
    expect(lines).toHaveLength(1);
    now += 1001;
    s.warn('unknown_source', { i: 500 }, 'refused');
    expect(lines).toHaveLength(2);
    expect(lines[1]![0]).toEqual({ i: 500, suppressed: 499 });
  });
});

describe('flood resistance in the embedded engine (raw UDP peers, T1 = 50 ms)', () => {
  it('unknown source: one stateless 403 (no 100, never retransmitted), no transaction state', async () => {
    const { engine, invites } = await setup();
    const stranger = await peerOn('127.0.0.2');
    stranger.send(request({ localPort: stranger.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    const res = await stranger.waitFor((m) => m.kind === 'response', 2000, '403');
    expect(res.kind === 'response' && `${res.status} ${res.reason}`).toBe('403 Forbidden (unknown source address)');
    expect(tagOf(res.headers.get('to'))).toBeTruthy();
    await sleep(T1 * 6);
    expect(stranger.received).toHaveLength(1);
    expect(invites).toHaveLength(0);
    expect(engine.serverTxCount).toBe(0);
    expect(engine.activeState).toEqual({ dialogs: 0, invites: 0, clientTxs: 0 });
    expect(engine.rejected.unknown_source).toBe(1);
  });

  it('unknown source with unknownSource: drop gets no answer at all, not even to garbage requests', async () => {
    const { engine } = await setup({ unknownSource: 'drop' });
    const stranger = await peerOn('127.0.0.2');
    stranger.send(request({ localPort: stranger.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    stranger.send(request({ method: 'OPTIONS', localPort: stranger.port, targetPort: engine.port }), engine.port);
    stranger.send(
      request({ localPort: stranger.port, targetPort: engine.port }).replace('Max-Forwards: 70', 'Max-Forwards: x'),
      engine.port,
    );
    await waitFor(() => engine.rejected.unknown_source === 3, 2000, 'three refusals');
    await sleep(T1 * 2);
    expect(stranger.received).toHaveLength(0);
    expect(engine.counters.badRequests).toBe(0);
  });

  it('per-source INVITE rate: beyond the burst, 503 with Retry-After (stateless), others unaffected', async () => {
    const { engine, invites } = await setup({ limits: { invitePerSec: 1 } });
    const trunk = await peerOn('127.0.0.1');
    for (let i = 0; i < 5; i++)
      trunk.send(request({ localPort: trunk.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    await waitFor(() => trunk.responses(503).length === 3, 2000, 'three 503');
    expect(invites).toHaveLength(2); // the burst (twice the rate)
    expect(trunk.responses(503)[0]!.msg.headers.get('retry-after')).toBe('1');
    await sleep(T1 * 4);
    expect(trunk.responses(503)).toHaveLength(3); // never retransmitted
    expect(engine.rejected.rate_limited).toBe(3);
    // OPTIONS has its own bucket.
    trunk.send(request({ method: 'OPTIONS', localPort: trunk.port, targetPort: engine.port }), engine.port);
    await trunk.waitFor((m) => m.kind === 'response' && m.status === 200, 2000, 'OPTIONS 200');
  });

  it('caps: calls beyond maxDialogs get 503; in-dialog requests still pass', async () => {
    const { engine, invites } = await setup({ limits: { maxDialogs: 1 } });
    const trunk = await peerOn('127.0.0.1');
    const callId = newId();
    trunk.send(request({ callId, localPort: trunk.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    await waitFor(() => invites.length === 1, 2000, 'invite');
    trunk.send(request({ localPort: trunk.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    const busy = await trunk.waitFor((m) => m.kind === 'response' && m.status === 503, 2000, '503');
    expect(busy.kind === 'response' && busy.reason).toBe('Service Unavailable (too many calls)');
    const dialogP = invites[0]!.answer('v=0\r\n');
    const ok = await trunk.waitFor((m) => m.kind === 'response' && m.status === 200, 2000, '200');
    const toTag = tagOf(ok.headers.get('to'));
    trunk.send(request({ callId, method: 'ACK', toTag, localPort: trunk.port, targetPort: engine.port }), engine.port);
    await dialogP;
    trunk.send(
      request({ callId, toTag, cseq: 2, method: 'BYE', localPort: trunk.port, targetPort: engine.port }),
      engine.port,
    );
    await trunk.waitFor((m) => m.kind === 'response' && m.status === 200 && m.headers.get('cseq') === '2 BYE');
    expect(engine.activeState.dialogs).toBe(0);
  });

  it('TCP: connections beyond maxConnections are closed on accept; idle ones are closed', async () => {
    const { engine } = await setup({ limits: { maxConnections: 1, connectionIdleSec: 0.3 } });
    const open = () =>
      new Promise<Socket>((resolve, reject) => {
        const s = connect(engine.port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
      });
    const closed = (s: Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));
    const first = await open();
    await waitFor(() => engine.streamConnections.tcp === 1, 2000, 'first connection tracked');
    const second = await open();
    await closed(second); // refused at once
    expect(engine.streamConnections.tcp).toBe(1);
    const t0 = Date.now();
    await closed(first); // idle: closed by the engine
    expect(Date.now() - t0).toBeGreaterThan(150);
    await waitFor(() => engine.streamConnections.tcp === 0, 2000, 'connection forgotten');
  });

  it('dialog.bye() never rejects and always destroys the dialog, even when building the BYE fails', async () => {
    const { engine, invites } = await setup();
    const trunk = await peerOn('127.0.0.1');
    const callId = newId();
    trunk.send(request({ callId, localPort: trunk.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    await waitFor(() => invites.length === 1, 2000, 'invite');
    const dialogP = invites[0]!.answer('v=0\r\n');
    const ok = await trunk.waitFor((m) => m.kind === 'response' && m.status === 200, 2000, '200');
    const toTag = tagOf(ok.headers.get('to'));
    trunk.send(request({ callId, method: 'ACK', toTag, localPort: trunk.port, targetPort: engine.port }), engine.port);
    const dialog = await dialogP;
    let destroyed = false;
    dialog.on('destroyed', () => (destroyed = true));
    (dialog as unknown as { dest: () => never }).dest = () => {
      throw new Error('no route');
    };
    await expect(dialog.bye('test')).resolves.toBeUndefined();
    expect(destroyed).toBe(true);
    expect(engine.activeState.dialogs).toBe(0);
  });
});

describe('attack: 10,000 spoofed INVITEs from an unknown source (real gateway)', () => {
  let dir: string;
  let pcap: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sip-flood-'));
    pcap = join(dir, 'pcma-1000.pcap');
    writePcap(pcap, toneRtp('PCMA', 1000, 1500));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('bounded state, at most one response each, and the real trunk is still answered with audio', async () => {
    h = await startSipHarness(); // the trunk allows 127.0.0.1/32 only
    const sip = h.front.engine as EmbeddedSipEngine;
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.2', () => r()));
    let responses = 0;
    sock.on('message', () => responses++);
    const port = (sock.address() as { port: number }).port;
    const heapBefore = process.memoryUsage().heapUsed;
    const N = 10_000;
    for (let i = 0; i < N; i++) {
      const invite = request({ callId: `flood-${i}`, localPort: port, targetPort: h.port, sdp: sdpOffer(4000) });
      sock.send(Buffer.from(invite.replace(/\r?\n/g, '\r\n'), 'latin1'), h.port, '127.0.0.1');
      if (i % 500 === 0) await sleep(1); // let the send queue drain (a burst, not a blocked loop)
    }
    // Wait until the engine has read what the kernel delivered.
    let seen = -1;
    while (seen !== sip.counters.received) {
      seen = sip.counters.received;
      await sleep(200);
    }
    expect(seen).toBeGreaterThan(100);
    expect(sip.rejected.unknown_source).toBe(seen);
    expect(sip.serverTxCount).toBe(0);
    expect(sip.activeState).toEqual({ dialogs: 0, invites: 0, clientTxs: 0 });
    expect(h.gw.ctx.registry.size).toBe(0);
    expect(h.front.ports.used).toBe(0);
    await sleep(3 * 500); // past T1 twice: nothing is retransmitted
    expect(responses).toBeLessThanOrEqual(seen); // at most one each (a few per second: the 403 is rate-limited too)
    expect(responses).toBeGreaterThan(0);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
    const metrics = await h.gw.ctx.metrics.registry.getSingleMetricAsString('gateway_sip_requests_rejected_total');
    expect(metrics).toContain(`gateway_sip_requests_rejected_total{reason="unknown_source",method="INVITE"} ${seen}`);
    sock.close();

    const created = new Promise<Call>((r) => h!.gw.ctx.registry.once('created', r));
    const res = await runSipp({
      scenario: 'uac-audio.xml',
      target: `127.0.0.1:${h.port}`,
      vars: { PCAP: pcap, PT: '8', CODEC: 'PCMA', PAUSE: '2000', FROM: '0788123456', TO: '0700000001' },
    });
    expect(res.code, res.errors).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
  });
});
