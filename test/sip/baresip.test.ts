import { describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency, tone, loudestToneDb } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { runBaresip } from '../peers/sip/baresip.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';

describe.each(SIP_ENGINES)('baresip (a real SIP phone) calling the gateway (sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  it('carries audio both ways: the phone hears the AI tone, the AI hears the phone tone', async () => {
    const h = await sip.start({ aiFreq: 440 });
    const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
    const run = await runBaresip({
      target: `sip:0700000001@127.0.0.1:${h.port}`,
      source: tone(1000, 8000, 6000),
      seconds: 4,
    });
    const call = await created;
    await waitFor(() => call.ended, 5000, 'call end');
    const heardByAi = h.sessions.get(call.id)!.heardPcm(25);
    expect(heardByAi.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(heardByAi, 8000) - 1000) / 1000).toBeLessThan(0.02);
    expect(loudestToneDb(heardByAi, 8000, 1000)).toBeGreaterThan(-20);
    const phone = run.heard.subarray(4000);
    expect(phone.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(phone, 8000) - 440) / 440).toBeLessThan(0.02);
    expect(loudestToneDb(phone, 8000, 440)).toBeGreaterThan(-20);
  });
});
