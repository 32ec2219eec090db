import { expect } from 'vitest';
import { startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { dominantFrequency, toneLevelDb } from '../support/audio.js';
import { loopbackSipConfig } from '../support/gateway.js';
import { leasePortRange, releasePortRange } from '../support/ports.js';
import type { Cleanups } from '../sip/handoff-rig.js';

export type { Cleanups };

/**
 * A WhatsApp harness with the SIP front on as well (RTP ports from a leased range) and one carrier
 * trunk dialling `dialUri`: the gateway of the handoff tests between a WhatsApp party and a SIP
 * party. The `local` route (the tone AI) takes the call and allows the given transfer.
 */
export async function startSipWhatsAppHarness(
  cleanups: Cleanups,
  o: { transfer: Record<string, unknown>; dialUri: string },
): Promise<Harness> {
  const rtpRange = leasePortRange(100);
  cleanups.push(() => releasePortRange(rtpRange));
  const [rtpMin, rtpMax] = rtpRange;
  const h = await startHarness({
    routes: { local: { kind: 'local', greeting: 'Hello caller.', transfer: o.transfer } },
    config: {
      ...loopbackSipConfig(rtpMin, rtpMax),
      trunks: [
        { name: 'mtn-rwanda', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', dialUri: o.dialUri },
      ],
    },
  });
  cleanups.push(() => h.stop());
  return h;
}

/** What one party heard across the bridge: more than `minSamples`, its tone `hz` within `maxOffHz`, at -20 dB or louder. */
export function expectBridgedTone(
  pcm: Int16Array,
  rate: number,
  hz: number,
  minSamples: number,
  maxOffHz: number,
): void {
  expect(pcm.length).toBeGreaterThan(minSamples);
  expect(Math.abs(dominantFrequency(pcm, rate) - hz)).toBeLessThan(maxOffHz);
  expect(toneLevelDb(pcm, rate, hz)).toBeGreaterThan(-20);
}
