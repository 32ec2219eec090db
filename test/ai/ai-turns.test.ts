import { afterEach, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Call } from '../../src/core/call.js';
import type { LatencySample } from '../../src/core/turn-latency.js';
import { startRealtimeRig } from '../peers/realtime/rig.js';
import { RealtimeTestServer, type RealtimeTestServerOptions } from '../peers/realtime/server.js';
import { concat, dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { MemoryLeg } from '../support/memory-leg.js';
import { api, simulatedCall, sleep, startTestGateway, TEST_TOKEN, waitFor } from '../support/gateway.js';

const pcmu = createCodec(PCMU_8K);
const ulawFrames = (pcm: Int16Array) => frames(pcm, 160).map((f) => pcmu.encode(f));
const CALLER_TONE = tone(1000, 8000, 600, 8000);
/** The stated bound: the caller hears the greeting this soon after answer (the stand-in thinks ~30 ms). */
const GREETING_WITHIN_MS = 1500;

/** Loud frames written to the leg from index `from` on, with their write times. */
function loud(leg: MemoryLeg, from = 0) {
  const out: { index: number; at: number; pcm: Int16Array }[] = [];
  for (let i = from; i < leg.written.length; i++) {
    const pcm = pcmu.decode(leg.written[i]!);
    if (dbfsOf(pcm) > -30) out.push({ index: i, at: leg.writeTimes[i]!, pcm });
  }
  return out;
}

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

async function harness(opts: RealtimeTestServerOptions = {}, routeExtra: Record<string, unknown> = {}) {
  const latency: LatencySample[] = [];
  const failures: string[] = [];
  const rig = await startRealtimeRig(opts, routeExtra, {
    onLatency: (s) => latency.push(s),
    onResponseFailed: (_route, reason) => failures.push(reason),
  });
  cleanups.push(() => rig.stop());
  const newCall = (): { call: Call; leg: MemoryLeg } => {
    const call = rig.newCall();
    return { call, leg: new MemoryLeg(call.id, PCMU_8K, pcmu.silence()) };
  };
  return { ...rig, newCall, latency, failures };
}

describe('first turn (route firstTurn) over the Realtime WebSocket', () => {
  it('mode ai (default): on answer the model is asked to greet and the caller hears it without saying anything', async () => {
    const { server, connector, newCall, latency } = await harness();
    const { call, leg } = newCall();
    const connected = await connector.prepare(call, leg);
    expect(call.state).toBe('ringing');
    const conn = server.connections[0]!;
    // Ready but ringing: no greeting yet (it would be lost before the answer).
    await sleep(300);
    expect(server.receivedOf('response.create')).toHaveLength(0);
    expect(loud(leg)).toHaveLength(0);

    const answeredAt = performance.now();
    connected.answered();
    expect(call.state).toBe('bridged');
    await waitFor(() => loud(leg).length >= 10, 10_000, 'greeting audio at the caller');
    const heard = loud(leg);
    expect(heard[0]!.at - answeredAt).toBeLessThan(GREETING_WITHIN_MS);
    expect(server.receivedOf('response.create')).toEqual([{ type: 'response.create' }]); // session instructions
    expect(conn.answers[0]!.instructions).toBeUndefined();
    await server.until(() => conn.answers[0]?.status === 'completed', 10_000, 'greeting done');
    await waitFor(() => connected.bridge.playout.empty, 10_000, 'greeting played');
    expect(dominantFrequency(concat(loud(leg).map((o) => o.pcm)), 8000)).toBeCloseTo(600, -1);
    expect(conn.appendSizes.length).toBeGreaterThan(0); // the uplink opened at answer

    // Answer → first audio is recorded with its two shares.
    const sample = call.latency.view().answerToFirstAudio!;
    expect(sample).not.toBeNull();
    expect(latency.filter((s) => s.kind === 'answer')).toEqual([sample]);
    expect(sample.totalMs).toBeGreaterThan(0);
    expect(sample.totalMs).toBeLessThan(GREETING_WITHIN_MS);
    expect(sample.aiMs).toBeGreaterThanOrEqual(25); // the stand-in "thinks" 30 ms before its first delta
    expect(sample.gatewayMs + sample.aiMs).toBeCloseTo(sample.totalMs, 0);
    expect(server.violations).toEqual([]);
  });

  it('mode text: the model is told to say the text verbatim; mode ai with instructions adds them to this response only', async () => {
    const a = await harness({}, { firstTurn: { mode: 'text', text: 'Welcome to Acme. How can I help?' } });
    const c1 = a.newCall();
    await a.connector.connect(c1.call, c1.leg);
    await a.server.until(() => a.server.receivedOf('response.create').length === 1, 5000, 'response.create');
    const ev = a.server.receivedOf('response.create')[0]!;
    expect(ev.response?.instructions).toMatch(/word for word/);
    expect(ev.response?.instructions).toContain('"Welcome to Acme. How can I help?"');
    await waitFor(() => loud(c1.leg).length >= 10, 10_000, 'spoken text');

    const b = await harness(
      {},
      { instructions: 'You are Acme support.', firstTurn: { instructions: 'Greet in French.' } },
    );
    const c2 = b.newCall();
    await b.connector.connect(c2.call, c2.leg);
    await b.server.until(() => b.server.receivedOf('response.create').length === 1, 5000, 'response.create');
    const ev2 = b.server.receivedOf('response.create')[0]!;
    expect(ev2.response?.instructions).toBe(
      'You are Acme support.\n\nFor this first turn of the call: Greet in French.',
    );
    expect(b.server.connections[0]!.session.instructions).toBe('You are Acme support.');
  });

  it('mode none: silence until the caller speaks, then the answer', async () => {
    const { server, connector, newCall } = await harness({}, { firstTurn: { mode: 'none' } });
    const { call, leg } = newCall();
    await connector.connect(call, leg);
    await sleep(1500);
    expect(server.receivedOf('response.create')).toHaveLength(0);
    expect(loud(leg)).toHaveLength(0);
    expect(call.latency.view().answerToFirstAudio).toBeNull();
    leg.feed(ulawFrames(CALLER_TONE));
    await waitFor(() => loud(leg).length >= 10, 10_000, 'answer to the caller');
    expect(server.connections[0]!.answers).toHaveLength(1);
  });

  it('a caller turn is timed from the end of speech; the AI share includes the server VAD hangover', async () => {
    const { server, connector, newCall, latency } = await harness({}, { firstTurn: { mode: 'none' } });
    const { call, leg } = newCall();
    await connector.connect(call, leg);
    // When the bridge read the tone's last frame: the real end of speech, however late the clock ran.
    let toneEndAt = 0;
    const readFrame = leg.readFrame.bind(leg);
    leg.readFrame = () => {
      const last = leg.inbound.length === 1;
      const frame = readFrame();
      if (last) toneEndAt = performance.now();
      return frame;
    };
    leg.feed(ulawFrames(CALLER_TONE));
    await waitFor(() => call.latency.turnCount === 1, 10_000, 'turn latency sample');
    const t = call.latency.view().turns.samples[0]!;
    expect(latency.filter((s) => s.kind === 'turn')).toEqual([t]);
    // The tone ended ~600 ms after it was fed; the server waited its 500 ms of silence, then answered.
    expect(t.aiMs).toBeGreaterThanOrEqual(450);
    expect(t.totalMs).toBeGreaterThanOrEqual(t.aiMs);
    // Playout wait + conversion: a few ticks, with room for a late timer on a loaded box.
    expect(t.gatewayMs).toBeLessThan(400);
    const firstLoud = loud(leg)[0]!.at;
    // The sample's total is what the caller lived: end of speech to the first loud frame written.
    expect(Math.abs(firstLoud - toneEndAt - t.totalMs)).toBeLessThan(150);
    expect(call.latency.view().turns).toMatchObject({ count: 1, p50TotalMs: t.totalMs, p95TotalMs: t.totalMs });
    expect(server.violations).toEqual([]);
  });
});

describe('AI unavailable before answer', () => {
  it('reject (default): the call ends ai_connect_failed with retryAfterSec for the front', async () => {
    const { connector, newCall } = await harness({ rejectWith: 429 }, { retryAfterSec: 45 });
    const { call, leg } = newCall();
    await expect(connector.prepare(call, leg)).rejects.toThrow(/429/);
    expect(call.endReason).toMatchObject({ by: 'error', cause: 'ai_connect_failed', retryAfterSec: 45 });
    expect(leg.closedWith).toMatchObject({ cause: 'ai_connect_failed', retryAfterSec: 45 });
  });

  it('apologise: prepare resolves with the spoken apology; on answer the caller hears it and the call hangs up', async () => {
    const { server, clock, connector, newCall } = await harness(
      { rejectWith: 401 },
      { onAiUnavailable: 'apologise', apologyText: 'Sorry, we cannot take your call now.' },
    );
    const { call, leg } = newCall();
    const connected = await connector.prepare(call, leg);
    expect(connected.apology).toBe(true);
    expect(server.connections).toHaveLength(0);
    const ended = new Promise((r) => call.once('ended', r));
    connected.answered();
    await Promise.race([ended, sleep(15_000).then(() => Promise.reject(new Error('call never ended')))]);
    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_unavailable' });
    expect(loud(leg).length).toBeGreaterThanOrEqual(25); // ≥ 0.5 s of speech (or the chime)
    expect(call.transcript.map((t) => t.text)).toEqual(['Sorry, we cannot take your call now.']);
    expect(clock.subscribers).toBe(0);
  });
});

describe('manual turns (turnDetection: null)', () => {
  it("a caller tone burst then silence: the gateway's VAD commits, asks for a response and the reply plays", async () => {
    const { server, connector, newCall } = await harness({}, { turnDetection: null, firstTurn: { mode: 'none' } });
    const { call, leg } = newCall();
    await connector.connect(call, leg);
    const conn = server.connections[0]!;
    expect(conn.session.audio?.input?.turn_detection).toBeNull();
    await sleep(500); // caller silence: held back in the pre-roll, nothing appended
    expect(conn.appendSizes).toHaveLength(0);
    leg.feed(ulawFrames(CALLER_TONE));
    await server.until(() => server.receivedOf('response.create').length === 1, 10_000, 'response.create');
    const types = conn.received.map((r) => r.type).filter((t) => t !== 'input_audio_buffer.append');
    expect(types.slice(-2)).toEqual(['input_audio_buffer.commit', 'response.create']);
    // What was committed is the turn: the tone (plus a little pre-roll and hangover), not the silence before.
    const heard = frames(server.callerAudio(0), 160);
    const tonal = heard.filter((f) => dbfsOf(f) > -30);
    expect(tonal.length).toBeGreaterThanOrEqual(28);
    expect(heard.length).toBeLessThan(30 + 15 + 35);
    expect(dominantFrequency(concat(tonal), 8000)).toBeCloseTo(1000, -1);
    await waitFor(() => loud(leg).length >= 10, 10_000, 'reply at the caller');
    expect(dominantFrequency(concat(loud(leg).map((o) => o.pcm)), 8000)).toBeCloseTo(600, -1);
    await waitFor(() => call.latency.turnCount === 1, 5000, 'turn timed');
    expect(server.violations).toEqual([]);
  });
});

describe('failed responses', () => {
  it('each failure is reported with its reason; after maxFailedResponses in a row the caller hears an apology and the call ends', async () => {
    const { server, connector, newCall, failures } = await harness(
      { failResponses: { status: 'failed', code: 'rate_limit_exceeded' } },
      { firstTurn: { mode: 'none' }, maxFailedResponses: 2 },
    );
    const { call, leg } = newCall();
    await connector.connect(call, leg);
    const conn = server.connections[0]!;
    leg.feed(ulawFrames(CALLER_TONE));
    await waitFor(() => failures.length === 1, 10_000, 'first failure');
    expect(failures).toEqual(['rate_limit_exceeded']);
    expect(call.ended).toBe(false);
    expect(loud(leg)).toHaveLength(0);
    const ended = new Promise((r) => call.once('ended', r));
    leg.feed(ulawFrames(CALLER_TONE));
    await Promise.race([ended, sleep(15_000).then(() => Promise.reject(new Error('call never ended')))]);
    expect(failures).toEqual(['rate_limit_exceeded', 'rate_limit_exceeded']);
    expect(conn.answers.map((a) => a.status)).toEqual(['failed', 'failed']);
    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_unavailable' });
    expect(loud(leg).length).toBeGreaterThanOrEqual(25); // the apology was played before the hang-up
    expect(call.transcript.at(-1)?.text).toMatch(/not available/);
  });

  it('an incomplete response (content filter) counts; a completed one resets the run', async () => {
    const { server, connector, newCall, failures } = await harness(
      { failResponses: { status: 'incomplete', reason: 'content_filter', count: 1 } },
      { firstTurn: { mode: 'none' }, maxFailedResponses: 2 },
    );
    const { call, leg } = newCall();
    await connector.connect(call, leg);
    leg.feed(ulawFrames(CALLER_TONE));
    await waitFor(() => failures.length === 1, 10_000, 'failure');
    expect(failures).toEqual(['content_filter']);
    leg.feed(ulawFrames(CALLER_TONE));
    await server.until(() => server.connections[0]!.answers[1]?.status === 'completed', 10_000, 'second answer');
    await waitFor(() => loud(leg).length >= 10, 10_000, 'second answer heard');
    expect(call.ended).toBe(false);
  });
});

describe('latency figures through the gateway: call view, call record and Prometheus', () => {
  it('GET /v1/calls/:id and the stored record carry answer and turn latency; /metrics has both histograms', async () => {
    const server = new RealtimeTestServer();
    await server.start();
    cleanups.push(() => server.stop());
    const gw = await startTestGateway({
      routes: { openai: { kind: 'realtime', url: server.url, apiKey: 'sk-test-0123456789', connectTimeoutMs: 3000 } },
      routing: { default: 'openai', rules: [] },
    });
    cleanups.push(() => gw.stop('test_done', 0));
    const { call, leg } = await simulatedCall(gw);
    await waitFor(() => call.latency.answer !== undefined, 10_000, 'greeting timed');
    await waitFor(() => call.media!.bridge.playout.empty, 10_000, 'greeting played');
    leg.feed(ulawFrames(CALLER_TONE));
    await waitFor(() => call.latency.turnCount === 1, 10_000, 'turn timed');
    const live = await api(gw)('GET', `/v1/calls/${call.id}`);
    const latency = live.body.latency as ReturnType<Call['latency']['view']>;
    expect(latency.answerToFirstAudio).toMatchObject({ kind: 'answer' });
    expect(latency.turns.count).toBe(1);
    expect(latency.turns.samples[0]!.aiMs).toBeGreaterThan(0);
    await call.end({ by: 'remote', cause: 'bye' });
    const stored = gw.ctx.records.get(call.id)!;
    expect(stored.latency.turns.count).toBe(1);
    expect(stored.latency.answerToFirstAudio!.totalMs).toBe(latency.answerToFirstAudio!.totalMs);
    const text = await (
      await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } })
    ).text();
    for (const share of ['total', 'gateway', 'ai']) {
      expect(text).toContain(`gateway_answer_to_first_ai_audio_seconds_count{share="${share}"} 1`);
      expect(text).toContain(`gateway_turn_latency_seconds_count{share="${share}"} 1`);
    }
  });
});
