import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { nextCall, runSipp } from '../peers/sip/harness.js';
import { leasePortRange } from '../support/ports.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sip-do-'));
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 6000));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const NUMS = { FROM: '0788123456', TO: '0700000001' };

describe.each(SIP_ENGINES)('delayed offer against sipp (real gateway, sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  it('INVITE without SDP: our offer in the 200, the answer from the ACK starts media both ways; body-less re-INVITEs answered in their ACKs', async () => {
    const h = await sip.start();
    const created = nextCall(h);
    const [mediaPort] = leasePortRange(100);
    // Sample how many RTP packets we have sent, to see media stop (inactive answer) and resume.
    const samples: { at: number; sent: number }[] = [];
    let call: Call | undefined;
    let remote: string | undefined;
    void created.then((c) => (call = c));
    const poll = setInterval(() => {
      const leg = call && h.front.legFor(call.info.externalId!);
      remote = leg?.remoteAddress ?? remote;
      if (leg) samples.push({ at: Date.now(), sent: leg.quality().packetsSent });
    }, 50);
    const res = await runSipp({
      scenario: 'uac-delayed-offer.xml',
      target: `127.0.0.1:${h.port}`,
      vars: { ...NUMS, PAUSE: '1500', PCAP: join(dir, 'pcma-1000.pcap') },
      mediaPort,
    });
    clearInterval(poll);
    expect(res.code, res.errors + res.stderr).toBe(0);
    const c = await created;
    await waitFor(() => c.ended, 3000, 'call end');
    expect(c.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    // Carrier → AI: the tone arrived (our leg learned where to listen from the ACK).
    const heard = h.sessions.get(c.id)!.heardPcm(10);
    expect(heard.length).toBeGreaterThan(3 * 8000);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
    // Gateway → carrier: sent to the port in the ACK's answer, stopped while inactive, resumed.
    expect(remote).toBe(`127.0.0.1:${mediaPort}`);
    let longestStall = 0;
    for (let i = 0, j = 0; i < samples.length; i++) {
      while (samples[j]!.sent !== samples[i]!.sent) j++;
      longestStall = Math.max(longestStall, samples[i]!.at - samples[j]!.at);
    }
    expect(longestStall).toBeGreaterThan(800); // ~1.5 s inactive
    const last = samples.at(-1)!.sent;
    expect(last).toBeGreaterThan(100); // sent before the hold and after it
    const beforeEnd = samples.find((s) => s.at >= samples.at(-1)!.at - 1000)!.sent;
    expect(last - beforeEnd).toBeGreaterThan(20); // still flowing in the last second (sendrecv again)
  });

  it('ACK without an answer to our offer: BYE with a Reason, the call ends as bad_sdp_answer', async () => {
    const h = await sip.start();
    const created = nextCall(h);
    const res = await runSipp({
      scenario: 'uac-delayed-offer-no-answer.xml',
      target: `127.0.0.1:${h.port}`,
      vars: NUMS,
    });
    expect(res.code, res.errors + res.stderr).toBe(0);
    const c = await created;
    await waitFor(() => c.ended, 3000, 'call end');
    expect(c.endReason).toMatchObject({ by: 'error', cause: 'bad_sdp_answer' });
    await waitFor(() => h.front.ports.used === 0, 3000, 'ports freed');
  });
});
