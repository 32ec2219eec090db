import { afterAll, describe, expect, it } from 'vitest';
import { concat, dbfsOf, dominantFrequency, loudestToneDb, tone, toneLevelDb } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { opusSince } from '../peers/whatsapp/arrivals.js';

let h: Harness | undefined;
afterAll(async () => {
  await h?.stop();
});

const CALLS = 20;
/** Caller k's AI answers with aiHz(k); caller k itself plays userHz(k). All 40 tones are distinct. */
const aiHz = (k: number) => 300 + 60 * k;
const userHz = (k: number) => 330 + 60 * k;
const number = (k: number) => `2507880${String(k).padStart(5, '0')}`;

describe('20 concurrent WhatsApp calls', () => {
  it('each caller hears its own AI and each AI hears its own caller (no cross-talk)', async () => {
    h = await startHarness({ freqFor: (from) => aiHz(Number(from.slice(-5))) });
    const users = Array.from({ length: CALLS }, (_, k) => h!.user(number(k)));
    await Promise.all(users.map((u) => u.call(30_000)));
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === CALLS, 10_000, 'all bridged');
    users.forEach((u, k) =>
      u.startSending((i) => tone(userHz(k), 48000, 20, 8000, (2 * Math.PI * userHz(k) * i * 960) / 48000)),
    );
    // Measure once every caller's audio is reaching its AI: under CI load a path can need a moment
    // after 'bridged' (this test is about cross-talk; set-up time is measured elsewhere).
    const flowing = () =>
      [...h!.sessions.values()].every((s) => s.heard.length > 0 && dbfsOf(s.heard[s.heard.length - 1]!) > -30);
    await waitFor(flowing, 10_000, 'caller audio flowing on every call');
    const t0 = performance.now();
    // Both ways measured once enough has arrived (a fixed 3 s window can hold too little on a loaded
    // box): 2 s of the AI at every caller after a 1 s settle, and 1 s of loud caller frames at every AI.
    const heardFrom = new Map([...h.sessions].map(([id, s]) => [id, s.heard.length]));
    const loudCount = new Map<string, { next: number; loud: number }>();
    const loudHeard = (id: string) => {
      const s = h!.sessions.get(id)!;
      const c = loudCount.get(id) ?? { next: heardFrom.get(id)!, loud: 0 };
      for (; c.next < s.heard.length; c.next++) if (dbfsOf(s.heard[c.next]!) > -30) c.loud++;
      loudCount.set(id, c);
      return c.loud;
    };
    await waitFor(
      () =>
        users.every((u) => opusSince(u, t0 + 1000) >= 100) && [...heardFrom.keys()].every((id) => loudHeard(id) >= 50),
      30_000,
      'audio both ways on every call',
    );
    const stopAt = performance.now();
    // Freeze what each AI has heard so far: checking 20 calls takes time, and the silence that
    // follows stopSending must not dilute the measured window.
    const heardUntil = new Map([...h.sessions].map(([id, s]) => [id, s.heard.length]));
    for (const u of users) u.stopSending();

    for (let k = 0; k < CALLS; k++) {
      const u = users[k]!;
      const call = h.gw.ctx.registry.findByExternalId(u.waCallId)!;
      expect(call.info.from).toBe(`+${number(k)}`);
      const got = u.decodeReceived(t0 + 1000, stopAt);
      const f = dominantFrequency(got, 48000);
      expect(Math.abs(f - aiHz(k)) / aiHz(k), `caller ${k} heard ${f} Hz`).toBeLessThan(0.02);
      // Level of the loudest 100 ms: 20 calls on a loaded box can delay frames past the window or
      // leave the decoder concealing (a fade, not attenuation); a gain error would lower every window.
      expect(loudestToneDb(got, 48000, aiHz(k)), `caller ${k} level`).toBeGreaterThan(-20);
      const session = h.sessions.get(call.id)!;
      const until = heardUntil.get(call.id)!;
      // The loud frames since t0: a sender stalled by a loaded machine shows as silence and concealment
      // in the AI's real-time input (as a pause does), which must not read as attenuation.
      const loud = session.heard.slice(heardFrom.get(call.id)!, until).filter((fr) => dbfsOf(fr) > -30);
      const g = dominantFrequency(concat(loud), 24000);
      expect(Math.abs(g - userHz(k)) / userHz(k), `AI ${k} heard ${g} Hz`).toBeLessThan(0.02);
      // The typical loud frame carries the caller's tone at level (a gain error lowers them all).
      const levels = loud.map((fr) => toneLevelDb(fr, 24000, userHz(k))).sort((a, b) => a - b);
      expect(levels[levels.length >> 1]!, `AI ${k} median frame level`).toBeGreaterThan(-20);
    }

    // Every caller hangs up; every leg and call is released.
    await Promise.all(users.map((u) => u.hangup()));
    await waitFor(() => h!.gw.ctx.registry.size === 0 && h!.front.activeCount === 0, 10_000, 'all released');
  }, 120_000);
});
