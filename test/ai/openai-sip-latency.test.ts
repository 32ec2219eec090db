import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Call } from '../../src/core/call.js';
import type { LatencySample } from '../../src/core/turn-latency.js';
import type { Gateway } from '../../src/gateway.js';
import { concat, dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { api, startTestGateway, waitFor } from '../support/gateway.js';
import { MemoryLeg } from '../support/memory-leg.js';
import { OpenAiApiStandIn } from '../peers/openai-sip/api-standin.js';
import { OpenAiSipConversation } from '../peers/openai-sip/conversation.js';

const SECRET = `whsec_${Buffer.from('openai-sip-latency-secret-012345').toString('base64')}`;
const API_KEY = 'sk-test-openai-sip-latency';
const pcmu = createCodec(PCMU_8K);
/** The stand-in's behaviour, which the figures must reflect. */
const THINK_MS = 300;
const VAD_SILENCE_MS = 500;
const GREETING_HZ = 500;
const ANSWER_HZ = 600;

let gw: Gateway;
let standIn: OpenAiApiStandIn;
let openai: OpenAiSipConversation;

beforeEach(async () => {
  standIn = new OpenAiApiStandIn(API_KEY);
  const apiBaseUrl = await standIn.start();
  openai = new OpenAiSipConversation({
    webhookUrl: () => `http://127.0.0.1:${gw.httpPort}/webhooks/openai/openai_sip`,
    secret: SECRET,
    api: standIn,
    apiKey: API_KEY,
    replyDelayMs: THINK_MS,
    silenceMs: VAD_SILENCE_MS,
    greetingHz: GREETING_HZ,
    answerHz: ANSWER_HZ,
  });
  await openai.start();
  gw = await startTestGateway({
    routes: {
      openai_sip: {
        kind: 'openai-sip',
        projectId: 'proj_latency',
        webhookSecret: SECRET,
        apiKey: API_KEY,
        apiBaseUrl,
        realtimeUrl: openai.url,
        connectTimeoutMs: 3000,
        transcription: false,
      },
    },
    routing: { default: 'openai_sip', rules: [] },
  });
  gw.ctx.legDialer = openai;
});

afterEach(async () => {
  await gw.stop('test_done', 0);
  await openai.stop();
  await standIn.stop();
});

const loud = (written: Buffer[]) => written.map((f) => pcmu.decode(f)).filter((p) => dbfsOf(p) > -30);

/**
 * A carrier caller on the OpenAI SIP route: quiet for `quietMs` (the greeting plays), then speaks
 * (1 kHz) for `speakMs`, then quiet again, RTP flowing throughout.
 */
async function call(quietMs: number, speakMs: number): Promise<{ call: Call; caller: MemoryLeg }> {
  const c = gw.ctx.registry.create({ front: 'sip', from: '+250788000001', to: '+250700000222', trunk: 'mtn' });
  const caller = new MemoryLeg(c.id, PCMU_8K, pcmu.silence());
  const script = concat([new Int16Array((8000 * quietMs) / 1000), tone(1000, 8000, speakMs, 8000)]);
  caller.feed(frames(script, 160).map((f) => pcmu.encode(f)));
  await gw.ctx.connector.connect(c, caller);
  return { call: c, caller };
}

describe('OpenAI SIP route: answer and turn latency from the sideband and the SIP leg', () => {
  it('records answer → greeting and caller end of speech → answer, split into shares, in /v1/calls/{id} and the record', async () => {
    const { call: c, caller } = await call(2500, 1000);
    const conv = openai.calls[0]!;

    // The greeting: asked for over the sideband after answer, heard by the caller.
    await waitFor(() => c.latency.view().answerToFirstAudio !== null, 5000, 'answer latency');
    const answer = c.latency.view().answerToFirstAudio! as LatencySample;
    expect(conv.received.map((r) => r.type)).toEqual(['session.update', 'response.create']);
    // Causal lower bound: OpenAI thinks THINK_MS before any audio exists.
    expect(answer.totalMs).toBeGreaterThanOrEqual(THINK_MS - 20);
    expect(answer.aiMs).toBeGreaterThanOrEqual(THINK_MS - 20);
    expect(answer.gatewayMs + answer.aiMs).toBeCloseTo(answer.totalMs, 0);

    // The caller's turn: OpenAI's VAD events reach the bridge through the sideband.
    await waitFor(() => c.latency.view().turns.count === 1, 8000, 'turn latency');
    const turn = c.latency.view().turns.samples[0]!;
    const types = conv.sent.map((e) => e.type);
    const stopped = types.indexOf('input_audio_buffer.speech_stopped');
    expect(types.indexOf('input_audio_buffer.speech_started')).toBeGreaterThan(-1);
    expect(types.indexOf('input_audio_buffer.speech_started')).toBeLessThan(stopped);
    expect(types.slice(stopped)).toEqual(
      expect.arrayContaining(['response.created', 'response.done', 'output_audio_buffer.started']),
    );
    // From the caller's last word: OpenAI's VAD waits VAD_SILENCE_MS, then thinks THINK_MS. The
    // end of speech is placed on our clock from audio_end_ms minus the trailing silence, so both
    // count in the AI's share, none in ours.
    expect(turn.totalMs).toBeGreaterThanOrEqual(VAD_SILENCE_MS + THINK_MS - 40);
    expect(turn.aiMs).toBeGreaterThanOrEqual(VAD_SILENCE_MS + THINK_MS - 40);
    expect(turn.gatewayMs).toBeLessThan(turn.aiMs);
    expect(turn.totalMs).toBeLessThan(5000);

    // What the caller heard: the greeting, then the answer (both 800 ms, played out in full).
    await waitFor(
      () => conv.sent.filter((e) => e.type === 'output_audio_buffer.stopped').length === 2,
      5000,
      'answer played',
    );
    await waitFor(() => loud(caller.written).length >= 78, 2000, 'answer at the caller');
    const heard = loud(caller.written);
    const greeting = concat(heard.slice(0, 30));
    const reply = concat(heard.slice(-30));
    expect(Math.abs(dominantFrequency(greeting, 8000) - GREETING_HZ)).toBeLessThan(12);
    expect(Math.abs(dominantFrequency(reply, 8000) - ANSWER_HZ)).toBeLessThan(12);

    const live = await api(gw)('GET', `/v1/calls/${c.id}`);
    expect(live.body.latency).toMatchObject({
      answerToFirstAudio: { kind: 'answer', totalMs: answer.totalMs },
      turns: { count: 1, samples: [{ kind: 'turn', totalMs: turn.totalMs, aiMs: turn.aiMs }] },
    });
    const hist = await gw.ctx.metrics.registry.getSingleMetricAsString('gateway_turn_latency_seconds');
    expect(hist).toMatch(/share="ai"/);

    await c.end({ by: 'remote', cause: 'bye' });
    const stored = await api(gw)('GET', `/v1/calls/${c.id}`);
    expect(stored.status).toBe(200);
    expect(stored.body.latency).toEqual(live.body.latency);
  });

  it('hostile sideband events (bad audio_end_ms, absurd VAD settings, a flood) do not corrupt the figures', async () => {
    const { call: c } = await call(4000, 1000);
    const conv = openai.calls[0]!;
    await waitFor(() => conv.sent.some((e) => e.type === 'output_audio_buffer.stopped'), 5000, 'greeting played');
    expect(c.latency.view().answerToFirstAudio).not.toBeNull();
    conv.send({
      type: 'session.updated',
      session: { audio: { input: { turn_detection: { type: 'server_vad', silence_duration_ms: 1e9 } } } },
    });
    conv.send({ type: 'session.updated', session: { audio: { input: { turn_detection: 'semantic' } } } });
    conv.send({ type: 'session.updated', session: null });
    const bad: unknown[] = ['soon', -5, 1e15, null, Number.NaN, { ms: 1 }];
    for (let i = 0; i < 600; i++) {
      conv.send({ type: 'input_audio_buffer.speech_started', audio_start_ms: i, item_id: `item_${i}` });
      conv.send({ type: 'input_audio_buffer.speech_stopped', audio_end_ms: bad[i % bad.length], item_id: `item_${i}` });
    }
    conv.send({ type: 'input_audio_buffer.speech_stopped' });
    conv.send({ type: 'output_audio_buffer.started' });
    conv.send({ type: 'session.updated', session: conv.session() }); // back to the real settings
    // The caller's real turn after all that is measured as before, and only it.
    await waitFor(() => c.latency.view().turns.count >= 1, 8000, 'turn latency');
    await waitFor(
      () => conv.sent.filter((e) => e.type === 'output_audio_buffer.stopped').length === 2,
      5000,
      'answer played',
    );
    const { turns } = c.latency.view();
    expect(turns.count).toBe(1);
    expect(turns.samples[0]!.totalMs).toBeGreaterThanOrEqual(VAD_SILENCE_MS + THINK_MS - 40);
    expect(turns.samples[0]!.totalMs).toBeLessThan(5000);
    expect(c.ended).toBe(false);
    expect(c.state).toBe('bridged');
  });
});
