import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Call } from '../../src/core/call.js';
import type { HangupReason } from '../../src/core/media-leg.js';
import { dominantFrequency, loudestToneDb } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { nextCall, runSipp, SIPP_NUMS, sippTarget, type SipHarness, usePcapDir } from '../peers/sip/harness.js';
import { toneRtp, toneWithDtmf, writePcap } from '../peers/sip/pcap.js';

const pcapDir = usePcapDir((dir) => {
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 2000));
  writePcap(join(dir, 'pcmu-700.pcap'), toneRtp('PCMU', 700, 2000));
  writePcap(join(dir, 'pcmu-dtmf5.pcap'), toneWithDtmf('PCMU', 700, '5', 1600));
});

const ended = (h: SipHarness) =>
  new Promise<{ id: string; reason: HangupReason }>((resolve) =>
    h.gw.ctx.registry.once('created', (c) => c.once('ended', (reason) => resolve({ id: c.id, reason }))),
  );

/** sipp's uac-audio.xml call: `pcap` sent as `codec` (PCMA pt 8, PCMU pt 0), BYE after `pause` ms. */
const audioCall = (
  h: SipHarness,
  pcap: string,
  codec: 'PCMA' | 'PCMU',
  pause: string,
  more: Partial<Parameters<typeof runSipp>[0]> & { nums?: { FROM: string; TO: string } } = {},
) => {
  const { nums = SIPP_NUMS, ...opts } = more;
  return runSipp({
    scenario: 'uac-audio.xml',
    target: sippTarget(h),
    vars: { PCAP: pcap, PT: codec === 'PCMA' ? '8' : '0', CODEC: codec, PAUSE: pause, ...nums },
    ...opts,
  });
};

describe.each(SIP_ENGINES)('SIP trunk calls from sipp (real gateway, sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  const dir = pcapDir;
  it('PCMA call: the caller tone reaches the AI, numbers are E.164, caller BYE ends and frees everything', async () => {
    const h = await sip.start();
    const done = ended(h);
    const created = nextCall(h);
    const res = await audioCall(h, join(dir(), 'pcma-1000.pcap'), 'PCMA', '2500');
    expect(res.code, res.errors + res.stderr).toBe(0);
    const call = await created;
    const { reason } = await done;
    expect(reason).toMatchObject({ by: 'remote', cause: 'bye' });
    expect(call.info).toMatchObject({ front: 'sip', from: '+250788123456', to: '+250700000001', trunk: 'mtn-rwanda' });
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(heard.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
    expect(loudestToneDb(heard, 8000, 1000)).toBeGreaterThan(-18);
    const q = Object.values(call.quality)[0] as { packetsReceived: number; packetsSent: number };
    expect(q.packetsReceived).toBeGreaterThan(80);
    expect(q.packetsSent).toBeGreaterThan(80);
    await waitFor(() => h.front.ports.used === 0 && h.front.activeCount === 0, 3000, 'ports freed');
  });

  it('PCMU call passes through untranscoded to a pcmu AI, and RFC 4733 DTMF becomes a dtmf event', async () => {
    const h = await sip.start({ aiFormat: PCMU_8K });
    const digits: string[] = [];
    h.gw.ctx.registry.once('created', (c) => c.on('dtmf', (d) => digits.push(d)));
    const created = nextCall(h);
    const res = await audioCall(h, join(dir(), 'pcmu-dtmf5.pcap'), 'PCMU', '2200', {
      nums: { FROM: '+35621234567', TO: '21000000' },
    });
    expect(res.code, res.errors + res.stderr).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(digits).toEqual(['5']);
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(Math.abs(dominantFrequency(heard, 8000) - 700) / 700).toBeLessThan(0.02);
  });

  it('50 calls at 10 calls/s: every call answered, carries the caller tone, and ends cleanly', async () => {
    const h = await sip.start();
    const calls: Call[] = [];
    h.gw.ctx.registry.on('created', (c) => calls.push(c));
    // The whole 2 s tone before the BYE: on a loaded box sipp's RTP thread can start late, and
    // a BYE at 1.2 s left one call with nothing heard.
    const res = await audioCall(h, join(dir(), 'pcma-1000.pcap'), 'PCMA', '2500', {
      calls: 50,
      args: ['-r', '10', '-l', '60'],
      timeoutSec: 30,
    });
    expect(res.code, res.errors + res.stdout.slice(-2000)).toBe(0);
    // sipp exits 0 only when every call succeeded (no failed call, no unexpected message).
    await waitFor(() => calls.length === 50 && calls.every((c) => c.ended), 5000, 'all calls ended');
    expect(calls.every((c) => c.endReason?.cause === 'bye')).toBe(true);
    for (const c of calls) {
      const heard = h.sessions.get(c.id)!.heardPcm(10);
      expect(loudestToneDb(heard, 8000, 1000), c.id).toBeGreaterThan(-20);
    }
    await waitFor(() => h.front.ports.used === 0, 3000, 'ports freed');
  });

  it('over TCP: call, audio and BYE on one connection (sipp -t t1)', async () => {
    const h = await sip.start();
    const created = nextCall(h);
    const res = await audioCall(h, join(dir(), 'pcma-1000.pcap'), 'PCMA', '1500', { args: ['-t', 't1'] });
    expect(res.code, res.errors + res.stderr).toBe(0);
    // Our Contact (drachtio-server writes its own, without a user part) names the TCP listener.
    expect(res.messages).toMatch(new RegExp(`Contact: <sip:(gateway@)?127\\.0\\.0\\.1:${h.port};transport=tcp>`));
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
  });
});
