import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { RealtimeTestServer } from '../peers/realtime/server.js';
import { nextCall, runSipp, SIPP_NUMS, sippTarget, startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { RtpEndpoint } from '../peers/sip/rtp-endpoint.js';
import { dbfsOf, dominantFrequency, toneLevelDb } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { freeUdpPort, udpBound } from '../support/udp.js';
import { createSocket } from 'node:dgram';

/** A bare UDP socket at the person's address, counting datagrams (none expected). */
async function udpListen(port: number): Promise<{ received: number; close(): void }> {
  const sock = createSocket('udp4');
  const state = { received: 0, close: () => sock.close() };
  sock.on('message', () => state.received++);
  await new Promise<void>((r) => sock.bind(port, '127.0.0.1', () => r()));
  return state;
}

/**
 * Handing a SIP caller to a person (issue 19) with real sipp processes for both parties: sipp does
 * the signalling, a test RTP endpoint per party plays a tone and records what it hears, and the
 * local Realtime stand-in plays the AI that calls transfer_call / send_dtmf.
 */
const CALLER_HZ = 500;
const HUMAN_HZ = 1300;

let cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

interface Rig {
  h: SipHarness;
  rt: RealtimeTestServer;
  phonePort: number;
  caller: RtpEndpoint;
  call: Call;
  callerSipp: ReturnType<typeof runSipp>;
}

/** A gateway whose trunk dials the person at a sipp UAS, and a sipp caller already bridged to the AI. */
async function setup(transfer: Record<string, unknown>, dtmf?: Record<string, unknown>, maxCalls = 60): Promise<Rig> {
  const rt = new RealtimeTestServer({});
  await rt.start();
  cleanups.push(() => rt.stop());
  const phonePort = await freeUdpPort();
  const h = await startSipHarness({
    trunks: [
      {
        name: 'mtn-rwanda',
        allow: ['127.0.0.1/32'],
        countryCode: '250',
        nationalPrefix: '0',
        maxCalls,
        dialUri: `sip:127.0.0.1:${phonePort}`,
      },
    ],
    routes: {
      agent: {
        kind: 'realtime',
        url: rt.url,
        apiKey: 'sk-test-0123456789',
        firstTurn: { mode: 'none' },
        transfer: { ringTimeoutSec: 5, ...transfer },
        ...(dtmf ? { dtmf } : {}),
      },
    },
    defaultRoute: 'agent',
  });
  cleanups.push(() => h.stop());
  const caller = new RtpEndpoint();
  const rtpPort = await caller.start();
  cleanups.push(() => caller.stop());
  const created = nextCall(h);
  const callerSipp = runSipp({
    scenario: 'uac-handoff.xml',
    target: sippTarget(h),
    vars: { ...SIPP_NUMS, RTPPORT: String(rtpPort), REFER_STATUS: '403 Forbidden' },
    timeoutSec: 60,
  });
  cleanups.push(() => callerSipp);
  const call = await created;
  cleanups.push(() => call.end({ by: 'operator', cause: 'test_done' }));
  await waitFor(() => call.state === 'bridged' && rt.connections.length === 1, 8000, 'bridged to the AI');
  await rt.until(() => rt.connections[0]!.session.tools !== undefined, 5000, 'session configured');
  return { h, rt, phonePort, caller, call, callerSipp };
}

/** The person: a sipp UAS at the trunk's dial URI with its media at a test RTP endpoint. */
async function person(rig: Rig, vars: { user: string; ringMs: number; talkMs: number }) {
  const human = new RtpEndpoint();
  human.freq = HUMAN_HZ;
  const rtpPort = await human.start();
  cleanups.push(() => human.stop());
  const sipp = runSipp({
    scenario: 'uas-party.xml',
    target: '127.0.0.1:5060', // unused by a UAS
    vars: {
      RTPPORT: String(rtpPort),
      EXPECT_USER: vars.user,
      RING_MS: String(vars.ringMs),
      TALK_MS: String(vars.talkMs),
    },
    args: ['-p', String(rig.phonePort)],
    timeoutSec: 25,
  });
  cleanups.push(() => sipp);
  await udpBound(rig.phonePort);
  return { human, sipp };
}

/** The AI asks for a transfer on the next caller turn. */
function aiTransfers(rt: RealtimeTestServer, args: Record<string, unknown>): void {
  rt.configure({ toolCalls: { 1: { name: 'transfer_call', arguments: args } } });
  rt.callerTurn('please put me through to a person');
}

function expectTone(pcm: Int16Array, hz: number): void {
  expect(pcm.length).toBeGreaterThan(4000);
  expect(Math.abs(dominantFrequency(pcm, 8000) - hz)).toBeLessThan(hz * 0.02);
  expect(toneLevelDb(pcm, 8000, hz)).toBeGreaterThan(-20);
}

describe('bridged transfer over SIP (sipp caller, sipp person through the trunk)', () => {
  it('REFER refused 403 → the gateway dials the person and bridges: tones both ways, ring-back meanwhile, AI closed', async () => {
    const rig = await setup({ allow: ['+25078800*'], mode: 'auto' });
    const { rt, call, caller } = rig;
    const { human, sipp: humanSipp } = await person(rig, { user: '.250788000111', ringMs: 3000, talkMs: 5000 });
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
    expect(await rig.h.gw.ctx.cluster.count('trunk:mtn-rwanda')).toBe(2);

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
    let slots = -1;
    await waitFor(
      () => (void rig.h.gw.ctx.cluster.count('trunk:mtn-rwanda').then((n) => (slots = n)), slots === 0),
      5000,
      'trunk slots freed',
    );
    expect(h1.messages).toMatch(/From: "?Caller"? ?<sip:\+250788123456@|P-Asserted|INVITE sip:\+250788000111@/);
  }, 60_000);

  it('busy (486): the caller hears hold audio, then the AI again; the tool output says busy', async () => {
    const rig = await setup({ allow: ['+250788000486'], mode: 'bridge' });
    const { rt, call, caller } = rig;
    const sipp = runSipp({
      scenario: 'uas-busy-then-ring.xml',
      target: '127.0.0.1:5060',
      args: ['-p', String(rig.phonePort)],
      timeoutSec: 30,
    });
    cleanups.push(() => sipp);
    await udpBound(rig.phonePort);
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
    const rig = await setup({ allow: ['+250788000111'], mode: 'bridge' }, undefined, 1);
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

  it('no answer: CANCEL after ringTimeoutSec, ring-back heard, the caller is back with the AI; output says no_answer', async () => {
    const rig = await setup({ allow: ['+250788000408'], mode: 'bridge' });
    const { rt, caller } = rig;
    const sipp = runSipp({
      scenario: 'uas-busy-then-ring.xml',
      target: '127.0.0.1:5060',
      args: ['-p', String(rig.phonePort)],
      timeoutSec: 30,
    });
    cleanups.push(() => sipp);
    await udpBound(rig.phonePort);
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
    const rig = await setup({ allow: ['+250788000408'], mode: 'bridge', ringTimeoutSec: 30 });
    const { rt, call, h } = rig;
    const sipp = runSipp({
      scenario: 'uas-busy-then-ring.xml',
      target: '127.0.0.1:5060',
      args: ['-p', String(rig.phonePort)],
      timeoutSec: 30,
    });
    cleanups.push(() => sipp);
    await udpBound(rig.phonePort);
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
    const rig = await setup({ allow: ['+250788000111'], mode: 'bridge', briefing: 'Call from {from}. {summary}' });
    const { rt, call, caller } = rig;
    const { human } = await person(rig, { user: '.250788000111', ringMs: 500, talkMs: 8000 });
    caller.freq = CALLER_HZ; // the caller talks all along; on hold nobody hears it
    aiTransfers(rt, { destination: '+250788000111', brief: 'They want to dispute a bill.' });
    await waitFor(() => call.transfers.length === 1, 30_000, 'transfer outcome');
    expect(call.transfers[0]).toMatchObject({ outcome: 'bridged', warm: true });
    await sleep(1500);
    // 20 ms frames the person received, in order: loud speech first, then the caller's tone.
    const frames = human.heard.map((f) => f.pcm);
    const isCaller = (f: Int16Array) => toneLevelDb(f, 8000, CALLER_HZ) > -20;
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
    const rig = await setup({ allow: [] }, { mode: 'text', interDigitTimeoutMs: 3000, terminator: '#' });
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
