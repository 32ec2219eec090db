import { afterEach, describe, expect, it } from 'vitest';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { dbfsOf, toneLevelDb } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import {
  aiTransfers,
  CALLER_HZ,
  expectTone,
  HUMAN_HZ,
  person,
  setup,
  waitSlots,
  type Cleanups,
} from './handoff-rig.js';

/**
 * The bridged-transfer case on both SIP engines: the carrier (sipp) refuses the REFER with
 * 403, the gateway dials the person (a second sipp) through the trunk and bridges the legs.
 */
let cleanups: Cleanups = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

describe.each(SIP_ENGINES)('bridged transfer over SIP (sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);

  it('REFER refused 403 → the gateway dials the person and bridges: tones both ways, ring-back meanwhile, AI closed', async () => {
    const rig = await setup(cleanups, {
      transfer: { allow: ['+25078800*'], mode: 'auto' },
      start: (o) => sip.start(o),
      stopsItself: true,
    });
    const { rt, call, caller, h } = rig;
    const { human, sipp: humanSipp } = await person(cleanups, rig, {
      user: '.250788000111',
      ringMs: 3000,
      talkMs: 5000,
    });
    const asked = performance.now();
    aiTransfers(rt, { destination: '+250788000111' });
    await waitFor(() => call.transfers.length === 1, 20_000, 'transfer outcome');
    const bridgedAt = performance.now();
    expect(call.transfers[0]).toMatchObject({
      destination: '+250788000111',
      mode: 'auto',
      outcome: 'bridged',
      by: 'ai',
    });
    // While the person's phone rang the caller heard the prompt, then the 425 Hz ring-back.
    const waiting = caller.audioSince(asked, bridgedAt);
    expect(dbfsOf(waiting)).toBeGreaterThan(-45);
    expect(toneLevelDb(waiting, 8000, 425)).toBeGreaterThan(-35);
    // The AI is gone from the call.
    await rt.until(() => rt.connections[0]!.closed, 5000, 'AI session closed');
    // The person's leg is a second call on the trunk: it holds its own slot in the trunk's cap.
    await waitSlots(h, 'trunk:mtn-rwanda', 2);

    caller.freq = CALLER_HZ;
    const talk = performance.now();
    await sleep(2500);
    expectTone(human.audioSince(talk + 300), CALLER_HZ);
    expectTone(caller.audioSince(talk + 300), HUMAN_HZ);

    // The person hangs up: the caller gets our BYE; the record says who ended it.
    const [h1, c1] = await Promise.all([humanSipp, rig.callerSipp]);
    expect(h1.code, h1.errors + h1.stderr + h1.messages.slice(-2000)).toBe(0);
    expect(c1.code, c1.errors + c1.stderr + c1.messages.slice(-2000)).toBe(0);
    expect(c1.messages).toMatch(/REFER sip:/);
    expect(c1.messages).toMatch(/SIP\/2\.0 403 Forbidden/);
    await waitFor(() => call.ended, 5000, 'call ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye', party: 'target' });
    expect(call.legs).toHaveLength(2);
    expect([...call.parties.values()]).toEqual(['caller', 'target']);
    await waitSlots(h, 'trunk:mtn-rwanda', 0);
    expect(h1.messages).toMatch(/From: "?Caller"? ?<sip:\+250788123456@|P-Asserted|INVITE sip:\+250788000111@/);
  }, 60_000);
});
