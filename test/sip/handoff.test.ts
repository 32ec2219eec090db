import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sippPhone, type SippResult } from '../peers/sip/harness.js';
import { dbfsOf, dominantFrequency, toneLevelDb } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { toneWav } from '../support/wav.js';
import {
  aiTransfers,
  CALLER_HZ,
  expectTone,
  person,
  setup,
  udpListen,
  type Cleanups,
  type Rig,
} from './handoff-rig.js';

/**
 * Handing a SIP caller to a person (issue 19) with real sipp processes for both parties (helpers in
 * handoff-rig.ts). The REFER 403 → bridge case runs on both SIP engines in handoff-engines.test.ts.
 */
let cleanups: Cleanups = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

/**
 * The person's phone: a sipp UAS on the rig's phone port (486 to +250788000486, others ring until
 * CANCELled); resolves once it listens, with sipp's run (in cleanups) still going, wrapped so that
 * awaiting the phone does not await the run.
 */
async function busyThenRingPhone(rig: Rig): Promise<{ sipp: Promise<SippResult> }> {
  const phone = await sippPhone('uas-busy-then-ring.xml', rig.phonePort);
  cleanups.push(() => phone.sipp);
  return phone;
}

describe('bridged transfer over SIP (sipp caller, sipp person through the trunk)', () => {
  it('busy (486): the caller hears hold audio, then the AI again; the tool output says busy', async () => {
    const rig = await setup(cleanups, { transfer: { allow: ['+250788000486'], mode: 'bridge' } });
    const { rt, call, caller } = rig;
    const { sipp } = await busyThenRingPhone(rig);
    const conn = rt.connections[0]!;
    const asked = performance.now();
    aiTransfers(rt, { destination: '+250788000486' });
    await rt.until(() => conn.toolOutputs.length === 1, 15_000, 'transfer tool output');
    const backAt = performance.now();
    expect(JSON.parse(conn.toolOutputs[0]!.output)).toMatchObject({ ok: false, outcome: 'busy' });
    expect(dbfsOf(caller.audioSince(asked, backAt))).toBeGreaterThan(-45); // hold prompt, never silence
    // The AI answers the tool output (stand-in response 2: 800 Hz) and the caller hears it.
    await rt.until(() => conn.answers[1]?.status === 'completed', 8000, 'AI speaks again');
    await sleep(600);
    expectTone(caller.audioSince(backAt), 800);
    expect(call.state).toBe('bridged');
    expect(call.transfers[0]).toMatchObject({ outcome: 'busy', mode: 'bridge' });
    expect((await sipp).code).toBe(0);
  }, 60_000);

  it('the trunk is full (maxCalls 1, held by the caller): no INVITE, the caller is back with the AI; output says no_capacity', async () => {
    const rig = await setup(cleanups, { transfer: { allow: ['+250788000111'], mode: 'bridge' }, maxCalls: 1 });
    const { rt, call, caller, h } = rig;
    // The person's phone: whatever reaches it would be an INVITE the trunk had no room for.
    const phone = await udpListen(rig.phonePort);
    cleanups.push(() => phone.close());
    const conn = rt.connections[0]!;
    aiTransfers(rt, { destination: '+250788000111' });
    await rt.until(() => conn.toolOutputs.length === 1, 15_000, 'transfer tool output');
    const backAt = performance.now();
    const out = JSON.parse(conn.toolOutputs[0]!.output) as { ok: boolean; outcome: string; detail: string };
    expect(out).toMatchObject({ ok: false, outcome: 'no_capacity' });
    expect(out.detail).toMatch(/trunk mtn-rwanda is at its limit of 1 concurrent calls/);
    expect(phone.received).toBe(0);
    expect(h.front.dialer!.activeCount).toBe(0);
    expect(await h.gw.ctx.cluster.count('trunk:mtn-rwanda')).toBe(1);
    await rt.until(() => conn.answers[1]?.status === 'completed', 8000, 'AI speaks again');
    await sleep(600);
    expectTone(caller.audioSince(backAt), 800);
    expect(call.state).toBe('bridged');
    expect(call.transfers[0]).toMatchObject({ outcome: 'no_capacity', mode: 'bridge' });
  }, 60_000);

  it('transfer.holdAudio: the caller hears the route WAV looped (not the ring-back) while the person rings', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hold-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // 700 Hz at 16 kHz, 1 s: the gateway resamples it to the caller's 8 kHz and loops it.
    const holdAudio = join(dir, 'hold.wav');
    writeFileSync(holdAudio, toneWav(700, 16000, 1000));
    const rig = await setup(cleanups, {
      transfer: { allow: ['+250788000408'], mode: 'bridge', holdPrompt: 'Hold on.', holdAudio },
    });
    const { rt, caller } = rig;
    const { sipp } = await busyThenRingPhone(rig);
    const conn = rt.connections[0]!;
    aiTransfers(rt, { destination: '+250788000408' });
    await rt.until(() => conn.toolOutputs.length === 1, 20_000, 'transfer tool output');
    const backAt = performance.now();
    expect(JSON.parse(conn.toolOutputs[0]!.output)).toMatchObject({ ok: false, outcome: 'no_answer' });
    // The last seconds of the 5 s ring: the file's tone, well above any ring-back.
    const held = caller.audioSince(backAt - 2500, backAt - 300);
    expect(held.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(held, 8000) - 700)).toBeLessThan(14);
    expect(toneLevelDb(held, 8000, 700)).toBeGreaterThan(-20);
    expect(toneLevelDb(held, 8000, 425)).toBeLessThan(toneLevelDb(held, 8000, 700) - 20);
    expect((await sipp).code).toBe(0);
  }, 60_000);

  it('no answer: CANCEL after ringTimeoutSec, ring-back heard, the caller is back with the AI; output says no_answer', async () => {
    const rig = await setup(cleanups, { transfer: { allow: ['+250788000408'], mode: 'bridge' } });
    const { rt, caller } = rig;
    const { sipp } = await busyThenRingPhone(rig);
    const conn = rt.connections[0]!;
    const asked = performance.now();
    aiTransfers(rt, { destination: '+250788000408' });
    await rt.until(() => conn.toolOutputs.length === 1, 20_000, 'transfer tool output');
    const backAt = performance.now();
    expect(JSON.parse(conn.toolOutputs[0]!.output)).toMatchObject({ ok: false, outcome: 'no_answer' });
    expect(toneLevelDb(caller.audioSince(asked, backAt), 8000, 425)).toBeGreaterThan(-35);
    await rt.until(() => conn.answers[1]?.status === 'completed', 8000, 'AI speaks again');
    await sleep(600);
    expectTone(caller.audioSince(backAt), 800);
    const res = await sipp;
    expect(res.code, res.errors + res.messages.slice(-2000)).toBe(0);
    expect(res.messages).toMatch(/CANCEL sip:/);
  }, 60_000);

  it('the call ends while the person rings: their INVITE is CANCELled, the caller gets BYE, ports and timers released', async () => {
    const rig = await setup(cleanups, { transfer: { allow: ['+250788000408'], mode: 'bridge', ringTimeoutSec: 30 } });
    const { rt, call, h } = rig;
    const { sipp } = await busyThenRingPhone(rig);
    aiTransfers(rt, { destination: '+250788000408' });
    await waitFor(() => h.front.dialer!.activeCount === 1, 8000, 'the person is being dialled');
    await sleep(500);
    await call.end({ by: 'operator', cause: 'api_hangup' });
    const [person, caller] = await Promise.all([sipp, rig.callerSipp]);
    expect(person.code, person.errors + person.messages.slice(-2000)).toBe(0);
    expect(person.messages).toMatch(/CANCEL sip:/);
    expect(caller.code, caller.errors + caller.messages.slice(-2000)).toBe(0);
    await waitFor(() => h.front.ports.used === 0 && h.front.dialer!.activeCount === 0, 5000, 'ports released');
    await waitFor(() => call.transfers.length === 1, 5000, 'transfer outcome recorded');
    expect(call.transfers[0]!.outcome).toBe('failed');
    expect(h.gw.ctx.clock.subscribers).toBe(0);
  }, 60_000);

  it('warm transfer: the person hears the briefing before any of the caller audio', async () => {
    const rig = await setup(cleanups, {
      transfer: { allow: ['+250788000111'], mode: 'bridge', briefing: 'Call from {from}. {summary}' },
    });
    const { rt, call, caller } = rig;
    const { human } = await person(cleanups, rig, { user: '.250788000111', ringMs: 500, talkMs: 8000 });
    caller.freq = CALLER_HZ; // the caller talks all along; on hold nobody hears it
    aiTransfers(rt, { destination: '+250788000111', brief: 'They want to dispute a bill.' });
    await waitFor(() => call.transfers.length === 1, 30_000, 'transfer outcome');
    expect(call.transfers[0]).toMatchObject({ outcome: 'bridged', warm: true });
    const isCaller = (f: Int16Array) => toneLevelDb(f, 8000, CALLER_HZ) > -20;
    // Over 40 frames of the caller once bridged (waited for: a loaded box delays the bridge, not the count).
    const callerFramesAfterJoin = () => {
      const heard = human.heard.map((f) => f.pcm);
      const first = heard.findIndex(isCaller);
      return first < 0 ? 0 : heard.slice(first + 5).filter(isCaller).length;
    };
    await waitFor(
      () => callerFramesAfterJoin() > 40,
      20_000,
      () => `caller frames heard: ${callerFramesAfterJoin()}`,
    );
    // 20 ms frames the person received, in order: loud speech first, then the caller's tone.
    const frames = human.heard.map((f) => f.pcm);
    const firstLoud = frames.findIndex((f) => dbfsOf(f) > -40);
    const firstCaller = frames.findIndex(isCaller);
    expect(firstLoud).toBeGreaterThanOrEqual(0);
    expect(firstCaller).toBeGreaterThan(firstLoud);
    const briefing = frames.slice(firstLoud, firstCaller).filter((f) => dbfsOf(f) > -40 && !isCaller(f));
    expect(briefing.length).toBeGreaterThan(50); // over a second of speech before the caller joined
    expect(frames.slice(firstCaller + 5).filter(isCaller).length).toBeGreaterThan(40);
    expect(call.transcript.some((t) => t.text.includes('dispute a bill'))).toBe(true);
  }, 60_000);
});

describe('keypad to and from the AI', () => {
  it('caller presses 1 2 3 # → one input to the AI; send_dtmf("45") reaches the caller as RFC 4733 events', async () => {
    const rig = await setup(cleanups, {
      transfer: { allow: [] },
      dtmf: { mode: 'text', interDigitTimeoutMs: 3000, terminator: '#' },
    });
    const { rt, caller, call } = rig;
    const conn = rt.connections[0]!;
    caller.pressKeys('123#');
    await rt.until(() => conn.seededItems.length >= 1, 8000, 'keypad input at the AI');
    await sleep(500);
    const texts = conn.seededItems.map((i) => JSON.stringify(i));
    expect(texts).toHaveLength(1);
    expect(conn.seededItems[0]).toMatchObject({ type: 'message', role: 'user' });
    expect(texts[0]).toContain('keypad: 123"');
    await rt.until(() => conn.answers.length === 1, 5000, 'the AI answers the keys');
    expect(call.transcript.some((t) => t.role === 'caller' && t.text === '[keypad] 123')).toBe(true);

    rt.configure({ toolCalls: { 1: { name: 'send_dtmf', arguments: { digits: '45' } } } });
    rt.callerTurn('press four five');
    await rt.until(() => conn.toolOutputs.length === 1, 5000, 'send_dtmf output');
    expect(JSON.parse(conn.toolOutputs[0]!.output)).toEqual({ ok: true, detail: 'sent 45' });
    await waitFor(() => caller.digits() === '45', 5000, 'RFC 4733 digits at the caller');
    // Each digit: progress packets, then the end packet three times, all with the event's timestamp.
    const four = caller.events.filter((e) => e.digit === '4');
    expect(four.filter((e) => e.end)).toHaveLength(3);
    expect(new Set(four.map((e) => e.timestamp)).size).toBe(1);

    // A hostile argument is refused before anything goes on the wire.
    rt.configure({ toolCalls: { 2: { name: 'send_dtmf', arguments: { digits: '1'.repeat(500) } } } });
    rt.callerTurn('press many');
    await rt.until(() => conn.toolOutputs.length === 2, 5000, 'refusal');
    expect(JSON.parse(conn.toolOutputs[1]!.output)).toMatchObject({ ok: false });
    await sleep(300);
    expect(caller.digits()).toBe('45');
  }, 60_000);
});
