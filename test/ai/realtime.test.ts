import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createCodec, type FrameCodec } from '../../src/core/audio/codecs.js';
import { l16, OPUS_48K, PCMU_8K } from '../../src/core/audio/format.js';
import { GatewayError } from '../../src/core/errors.js';
import { startRealtimeRig } from '../peers/realtime/rig.js';
import { type RealtimeTestServerOptions } from '../peers/realtime/server.js';
import { concat, dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { MemoryLeg } from '../support/memory-leg.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pcmu = createCodec(PCMU_8K);
const ulawFrames = (pcm: Int16Array) => frames(pcm, 160).map((f) => pcmu.encode(f));
const ulawBytes = (pcm: Int16Array) => Buffer.concat(ulawFrames(pcm));
const CALLER_TONE = tone(1000, 8000, 600, 8000);

async function until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Frames written to the leg from `from` on, decoded, with their index and write time; loud = above -30 dBFS. */
function loudWritten(leg: MemoryLeg, decode: (f: Buffer) => Int16Array, from = 0) {
  const out: { index: number; at: number; pcm: Int16Array }[] = [];
  for (let i = from; i < leg.written.length; i++) {
    const pcm = decode(leg.written[i]!);
    if (dbfsOf(pcm) > -30) out.push({ index: i, at: leg.writeTimes[i]!, pcm });
  }
  return out;
}

const within = (actual: number, expected: number, pct: number) =>
  expect(Math.abs(actual - expected), `${actual} vs ${expected} ±${pct}%`).toBeLessThanOrEqual((expected * pct) / 100);

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

async function harness(opts: RealtimeTestServerOptions = {}, routeExtra: Record<string, unknown> = {}) {
  // These tests count turns from the caller's first; greetings: ai-turns.test.ts.
  const rig = await startRealtimeRig(opts, { firstTurn: { mode: 'none' }, ...routeExtra });
  cleanups.push(() => rig.stop());
  return rig;
}

describe('OpenAI Realtime backend (against the local Realtime server)', () => {
  it('G.711 leg: µ-law passes straight through both ways; caller tone arrives intact; answer paced at 20 ms', async () => {
    const { server, clock, connector, newCall } = await harness();
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { bridge, session } = await connector.connect(call, leg);
    expect(call.state).toBe('bridged');
    expect(bridge.passthrough).toBe(true);
    expect(session.inputFormat).toEqual(PCMU_8K);
    const conn = server.connections[0]!;
    expect(conn.model).toBe('gpt-realtime');
    expect(conn.authorization).toBe('Bearer sk-test-0123456789');
    expect(conn.session.audio?.input?.format).toEqual({ type: 'audio/pcmu' });
    expect(conn.session.audio?.output?.format).toEqual({ type: 'audio/pcmu' });
    expect(conn.session.audio?.input?.turn_detection).toMatchObject({
      type: 'server_vad',
      threshold: 0.5,
      prefix_padding_ms: 300,
      silence_duration_ms: 500,
    });
    expect(conn.session.audio?.input?.transcription).toEqual({ model: 'gpt-4o-mini-transcribe' });
    // No transfer.allow on this route: no transfer tool at all (toll-fraud guard).
    expect(conn.session.tools?.map((t) => t.name)).toEqual(['end_call', 'send_dtmf']);

    const before = leg.written.length;
    let maxLateness = 0;
    clock.onLateness = (ms) => (maxLateness = Math.max(maxLateness, ms));
    let loudAtAnswerSent = -1;
    server.onSent = (_, type) => {
      if (type === 'response.done' && loudAtAnswerSent < 0)
        loudAtAnswerSent = loudWritten(leg, (f) => pcmu.decode(f), before).length;
    };
    const fed = ulawFrames(CALLER_TONE);
    leg.feed(fed);
    await server.until(() => conn.answers[0]?.status === 'completed', 10_000, 'answer to turn 1');
    // Caller audio: every tone frame reached the server bit-exact (passthrough), one append per 20 ms frame.
    const heard = frames(server.callerAudio(0), 160).filter((f) => dbfsOf(f) > -30);
    expect(heard.length).toBe(fed.length);
    expect(Buffer.from(concat(heard).buffer)).toEqual(Buffer.from(concat(fed.map((f) => pcmu.decode(f))).buffer));
    within(dominantFrequency(concat(heard), 8000), 1000, 2);
    expect(new Set(conn.appendSizes)).toEqual(new Set([160]));

    // The answer (turn 1 → 600 Hz, 1.5 s) arrived in bursts far ahead of real time, but was paced
    // out one frame per tick: when the server had sent all of it, most of it was still to play.
    const answer = conn.answers[0]!;
    expect(answer.freq).toBe(600);
    expect(loudAtAnswerSent).toBeGreaterThanOrEqual(0);
    expect(loudAtAnswerSent).toBeLessThan(75 / 2);
    await until(() => bridge.playout.empty && !bridge.playout.streaming, 10_000, 'playout');
    const out = loudWritten(leg, (f) => pcmu.decode(f), before);
    // Exactly the answer, bit-exact (µ-law passthrough), 75 contiguous frames: no hole, no padding.
    expect(out.length).toBe(75);
    expect(out.at(-1)!.index - out[0]!.index + 1).toBe(75);
    expect(Buffer.concat(out.map((o) => leg.written[o.index]!))).toEqual(ulawBytes(tone(600, 8000, 1500, 8000)));
    expect(bridge.playout.stats).toEqual({ underruns: 0, holeFrames: 0, prebufferFrames: 0 });
    // Paced at 20 ms: the median gap between frames is one tick (the median ignores the odd
    // event-loop stall of a loaded machine, after which the clock catches up back to back).
    const gaps = out
      .slice(1)
      .map((o, i) => o.at - out[i]!.at)
      .sort((a, b) => a - b);
    within(gaps[gaps.length >> 1]!, 20, 15);
    // Never faster than real time: 75 frames take at least 74 ticks, less how late the first one ran.
    expect(out.at(-1)!.at - out[0]!.at).toBeGreaterThanOrEqual(74 * 20 - maxLateness);

    // Transcripts from both sides are on the call.
    await until(() => call.transcript.length >= 2, 5000, 'transcripts');
    expect(call.transcript.find((t) => t.role === 'caller')?.text).toMatch(/^tone (99\d|100\d) Hz$/);
    expect(call.transcript.find((t) => t.role === 'ai')?.text).toBe('turn 1 tone 600 Hz');

    await call.end({ by: 'remote', cause: 'bye' });
    await server.until(() => conn.closed, 5000, 'socket closed by the gateway');
    expect(server.openConnections).toBe(0);
    expect(clock.subscribers).toBe(0);
    expect(server.violations).toEqual([]);
  });

  it('Opus leg: caller audio goes up as 24 kHz PCM and the answer comes back through Opus', async () => {
    const { server, connector, newCall } = await harness();
    const call = newCall();
    const enc = createCodec(OPUS_48K, 24000);
    const leg = new MemoryLeg(call.id, OPUS_48K, enc.silence());
    const { bridge, session } = await connector.connect(call, leg);
    expect(bridge.passthrough).toBe(false);
    expect(session.inputFormat).toEqual(l16(24000));
    const conn = server.connections[0]!;
    expect(conn.session.audio?.input?.format).toEqual({ type: 'audio/pcm', rate: 24000 });
    expect(conn.session.audio?.output?.format).toEqual({ type: 'audio/pcm', rate: 24000 });

    const before = leg.written.length;
    const input = tone(1000, 24000, 600, 8000);
    leg.feed(frames(input, 480).map((f) => enc.encode(f)));
    await server.until(() => conn.answers[0]?.status === 'completed', 10_000, 'answer to turn 1');
    expect(new Set(conn.appendSizes)).toEqual(new Set([960])); // 20 ms of 24 kHz PCM16 per append
    const heard = frames(server.callerAudio(0), 480).filter((f) => dbfsOf(f) > -30);
    expect(heard.length).toBeGreaterThanOrEqual(28);
    expect(heard.length).toBeLessThanOrEqual(32);
    within(dominantFrequency(concat(heard), 24000), 1000, 2);
    expect(Math.abs(dbfsOf(concat(heard.slice(2, -2))) - dbfsOf(input))).toBeLessThan(1.5);

    const dec: FrameCodec = createCodec(OPUS_48K, 24000);
    await until(
      () => bridge.playout.empty && !bridge.playout.streaming && leg.written.length - before > 120,
      10_000,
      'playout',
    );
    const atEmpty = leg.written.length;
    await until(() => leg.written.length >= atEmpty + 5, 5000, 'five more ticks written after the answer');
    const out = loudWritten(leg, (f) => dec.decode(f), before);
    expect(out.length).toBeGreaterThanOrEqual(73);
    expect(out.length).toBeLessThanOrEqual(77);
    within(dominantFrequency(concat(out.map((o) => o.pcm)), 24000), 600, 2);
    expect(server.violations).toEqual([]);
  });

  it('barge-in: playout clears within one frame, the response is cancelled and truncated at what was heard', async () => {
    // Near real-time sending, so the answer is still being generated when the caller interrupts.
    const { server, connector, newCall } = await harness({ speedup: 1.25 });
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { bridge, session } = await connector.connect(call, leg);
    const conn = server.connections[0]!;
    const before = leg.written.length;
    leg.feed(ulawFrames(CALLER_TONE));
    const decode = (f: Buffer) => pcmu.decode(f);
    await until(() => loudWritten(leg, decode, before).length >= 25, 10_000, '500 ms of the answer played');

    // What is measured is the gateway: from the moment speech_started reaches it (whenever the
    // server's VAD decides, ~200 ms into the speech here) to the AI audio stopping on the leg.
    let writtenAtSpeech = -1;
    session.on('speech_started', () => (writtenAtSpeech = leg.written.length));
    const bargeInsBefore = bridge.stats.bargeIns; // the caller's first turn counted one already
    leg.feed(ulawFrames(tone(1000, 8000, 600, 8000)));
    await until(() => writtenAtSpeech >= 0, 5000, 'speech_started');
    await server.until(() => conn.truncates.length === 1, 5000, 'truncate');
    await server.until(() => conn.answers[0]!.status === 'cancelled', 5000, 'answer 1 cancelled');
    const cut = leg.written.length;

    expect(bridge.stats.bargeIns).toBe(bargeInsBefore + 1);
    // Clearing is synchronous (well under 1 ms); the bound leaves room for a GC pause on a loaded box.
    expect(bridge.stats.lastBargeInMs!).toBeLessThan(20);
    // Not one AI frame after speech_started reached the gateway: playout was cleared at once.
    expect(loudWritten(leg, decode, writtenAtSpeech).filter((o) => o.index < cut)).toEqual([]);
    const played = loudWritten(leg, decode, before).filter((o) => o.index < writtenAtSpeech);
    expect(played.length).toBeGreaterThanOrEqual(25);
    expect(played.length).toBeLessThan(75); // it really was cut short
    expect(played.at(-1)!.index - played[0]!.index + 1).toBe(played.length); // no hole before the cut

    // The truncation point is exactly what the caller heard of the item (every frame played is 20 ms).
    const truncate = conn.truncates[0]!;
    expect(truncate.item_id).toBe(conn.answers[0]!.itemId);
    expect(truncate.content_index).toBe(0);
    expect(truncate.audio_end_ms).toBe(played.length * 20);
    // The gateway also asked for the cancel (the server's own VAD had already done it: a harmless "not active").
    expect(server.receivedOf('response.cancel')).toEqual([
      { type: 'response.cancel', response_id: conn.answers[0]!.responseId },
    ]);

    // The interruption becomes turn 2; its answer (800 Hz) plays and nothing more of the 600 Hz one does.
    await server.until(() => conn.answers[1]?.status === 'completed', 10_000, 'answer to turn 2');
    await until(() => bridge.playout.empty && !bridge.playout.streaming, 10_000, 'playout');
    const after = loudWritten(leg, decode, writtenAtSpeech);
    expect(after.length).toBe(75);
    expect(Buffer.concat(after.map((o) => leg.written[o.index]!))).toEqual(ulawBytes(tone(800, 8000, 1500, 8000)));
    expect(server.violations).toEqual([]);
  });

  it('end_call: the goodbye plays out in full, then the call is hung up', async () => {
    const { server, clock, connector, newCall } = await harness({
      toolCalls: { 1: { name: 'end_call', arguments: { reason: 'caller is done' }, audioFirst: true } },
    });
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    await connector.connect(call, leg);
    const conn = server.connections[0]!;
    const before = leg.written.length;
    const ended = new Promise((r) => call.once('ended', r));
    leg.feed(ulawFrames(CALLER_TONE));
    await Promise.race([ended, sleep(8000).then(() => Promise.reject(new Error('call never ended')))]);

    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'end_call' });
    expect(leg.closedWith?.cause).toBe('end_call');
    const goodbye = loudWritten(leg, (f) => pcmu.decode(f), before);
    expect(goodbye.length).toBeGreaterThanOrEqual(74); // all 1.5 s of it
    within(dominantFrequency(concat(goodbye.map((o) => o.pcm)), 8000), 600, 2);
    expect(conn.toolOutputs).toEqual([{ call_id: conn.answers[0]!.toolCallId, output: '{"ok":true}' }]);
    expect(server.receivedOf('response.create')).toHaveLength(0); // no extra speech after the goodbye
    expect(call.toolCalls.map((t) => t.name)).toEqual(['end_call']);
    await server.until(() => conn.closed, 5000, 'socket closed');
    expect(clock.subscribers).toBe(0);
    expect(server.violations).toEqual([]);
  });

  it('custom HTTP tool round-trips, and transfer_call reports "not supported" where the front cannot transfer', async () => {
    const bodies: { body: unknown; callId: string | undefined }[] = [];
    const http: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        bodies.push({ body: JSON.parse(body), callId: req.headers['x-call-id'] as string | undefined });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"balance":42,"currency":"RWF"}');
      });
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => http.close(() => r())));
    const port = (http.address() as AddressInfo).port;
    const { server, connector, newCall } = await harness(
      {
        toolCalls: {
          1: { name: 'lookup_balance', arguments: { account: '12345' } },
          2: { name: 'transfer_call', arguments: { destination: '+250788000002' } },
        },
      },
      {
        transfer: { allow: ['+250788000002'] },
        tools: [
          {
            name: 'lookup_balance',
            description: 'Account balance',
            url: `http://127.0.0.1:${port}/balance`,
            parameters: { type: 'object', properties: { account: { type: 'string' } }, required: ['account'] },
            timeoutMs: 2000,
          },
        ],
      },
    );
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { bridge } = await connector.connect(call, leg);
    const conn = server.connections[0]!;
    expect(conn.session.tools?.map((t) => t.name)).toEqual([
      'end_call',
      'send_dtmf',
      'transfer_call',
      'lookup_balance',
    ]);

    const before = leg.written.length;
    leg.feed(ulawFrames(CALLER_TONE));
    // Turn 1: tool call → HTTP POST → function_call_output → response.create → spoken answer (response 2: 800 Hz).
    await server.until(() => conn.answers[1]?.status === 'completed', 10_000, 'answer after the tool output');
    expect(bodies).toEqual([{ body: { account: '12345' }, callId: call.id }]);
    expect(conn.toolOutputs[0]).toEqual({
      call_id: conn.answers[0]!.toolCallId,
      output: '{"balance":42,"currency":"RWF"}',
    });
    const types = conn.received.map((r) => r.type).filter((t) => t !== 'input_audio_buffer.append');
    expect(types.indexOf('response.create')).toBeGreaterThan(types.indexOf('conversation.item.create'));
    await until(
      () => bridge.playout.empty && loudWritten(leg, (f) => pcmu.decode(f), before).length >= 74,
      5000,
      'playout',
    );
    const spoken = loudWritten(leg, (f) => pcmu.decode(f), before);
    within(dominantFrequency(concat(spoken.map((o) => o.pcm)), 8000), 800, 2);

    // Turn 2: transfer on a front without transfer support.
    leg.feed(ulawFrames(CALLER_TONE));
    await server.until(() => conn.toolOutputs.length === 2, 10_000, 'transfer output');
    const out = JSON.parse(conn.toolOutputs[1]!.output) as { ok: boolean; detail: string };
    expect(out.ok).toBe(false);
    expect(out.detail).toMatch(/not supported/);
    await server.until(() => conn.answers[3]?.status === 'completed', 10_000, 'answer after transfer');
    expect(call.toolCalls.map((t) => [t.name, t.output])).toEqual([
      ['lookup_balance', '{"balance":42,"currency":"RWF"}'],
      ['transfer_call', conn.toolOutputs[1]!.output],
    ]);
    expect(call.state).toBe('bridged');
    expect(server.violations).toEqual([]);
  });

  it('a socket dropped mid-call is reconnected once with the conversation re-seeded', async () => {
    const { server, route, connector, newCall } = await harness({ dropOnTurn: 2 });
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { bridge } = await connector.connect(call, leg);
    const first = server.connections[0]!;
    leg.feed(ulawFrames(CALLER_TONE));
    await server.until(() => first.answers[0]?.status === 'completed', 10_000, 'answer to turn 1');
    await until(() => call.transcript.length >= 2 && bridge.playout.empty, 10_000, 'turn 1 heard');

    leg.feed(ulawFrames(CALLER_TONE)); // turn 2: the server drops the socket instead of answering
    await server.until(
      () => server.connections.length === 2 && server.connections[1]!.seededItems.length === 1,
      5000,
      'reconnect',
    );
    expect(first.closed).toBe(true);
    const second = server.connections[1]!;
    expect(second.session.instructions).toBe(route.instructions);
    expect(second.session.audio?.input?.format).toEqual({ type: 'audio/pcmu' });
    const seed = second.seededItems[0]!;
    expect(seed).toMatchObject({ type: 'message', role: 'system' });
    const text = (seed as { content: { text: string }[] }).content[0]!.text;
    expect(text).toMatch(/Caller: tone (99\d|100\d) Hz/);
    expect(text).toContain('You: turn 1 tone 600 Hz');

    // The conversation carries on over the new socket.
    const before = leg.written.length;
    leg.feed(ulawFrames(CALLER_TONE));
    await server.until(() => second.answers[0]?.status === 'completed', 10_000, 'answer on the new socket');
    await until(
      () => bridge.playout.empty && loudWritten(leg, (f) => pcmu.decode(f), before).length >= 74,
      5000,
      'playout',
    );
    const out = loudWritten(leg, (f) => pcmu.decode(f), before);
    within(dominantFrequency(concat(out.map((o) => o.pcm)), 8000), 600, 2);
    expect(call.state).toBe('bridged');
    expect(server.connections).toHaveLength(2);
    expect(server.violations).toEqual([]);
  });

  it('if the reconnect fails, the caller hears an apology from the local TTS and the call ends', async () => {
    const { server, connector, newCall } = await harness({ dropOnTurn: 1, rejectWith: 503, rejectFrom: 1 });
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    await connector.connect(call, leg);
    const before = leg.written.length;
    const ended = new Promise((r) => call.once('ended', r));
    leg.feed(ulawFrames(CALLER_TONE));
    await Promise.race([ended, sleep(15_000).then(() => Promise.reject(new Error('call never ended')))]);
    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_unavailable' });
    expect(server.connections).toHaveLength(1); // the 503 never became a session
    // The server never answered, so every loud frame is the apology (≥ 1 s of speech or the chime).
    expect(loudWritten(leg, (f) => pcmu.decode(f), before).length).toBeGreaterThanOrEqual(30);
    expect(call.transcript.at(-1)?.text).toMatch(/not available/);
    expect(server.violations).toEqual([]);
  });

  for (const status of [401, 429] as const) {
    it(`a refused connection (HTTP ${status}) ends the call with a reason naming it`, async () => {
      const { server, clock, registry, connector, newCall } = await harness({ rejectWith: status });
      const call = newCall();
      const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
      const err = await connector.connect(call, leg).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('ai_connect_failed');
      expect((err as GatewayError).callId).toBe(call.id);
      const why = status === 401 ? /HTTP 401 Unauthorized.*apiKey/ : /HTTP 429 Too Many Requests.*rate limit/;
      expect((err as Error).message).toMatch(why);
      expect(call.endReason?.cause).toBe('ai_connect_failed');
      expect(call.endReason?.detail).toMatch(why);
      expect(leg.closedWith?.cause).toBe('ai_connect_failed');
      expect(registry.size).toBe(0);
      expect(clock.subscribers).toBe(0);
      expect(server.connections).toHaveLength(0);
    });
  }
});

describe('Realtime backend robustness', () => {
  it('malformed server events are logged and skipped; the call carries on', async () => {
    const { server, connector, newCall } = await harness();
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { bridge, session } = await connector.connect(call, leg);
    server.inject('this is not json');
    server.inject('{"no":"type"}');
    server.inject('{"type":"response.output_audio.delta","item_id":"x"}'); // no audio data
    server.inject('{"type":"response.created"}'); // no response object
    server.inject('{"type":"some.future_event","x":1}');
    const stats = (session as unknown as { stats: { errors: number } }).stats;
    await until(() => stats.errors >= 4, 5000, 'the four malformed events counted');
    expect(stats.errors).toBe(4);
    expect(call.state).toBe('bridged');
    // A normal turn still works afterwards.
    const before = leg.written.length;
    leg.feed(ulawFrames(CALLER_TONE));
    const conn = server.connections[0]!;
    await server.until(() => conn.answers.at(-1)?.status === 'completed', 10_000, 'answer');
    await until(
      () => bridge.playout.empty && loudWritten(leg, (f) => pcmu.decode(f), before).length >= 74,
      5000,
      'playout',
    );
    expect(server.violations).toEqual([]);
  });

  it('operator say(): the model is asked to speak the text and its answer reaches the caller', async () => {
    const { server, connector, newCall } = await harness();
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { bridge, session } = await connector.connect(call, leg);
    const before = leg.written.length;
    session.say!('Your balance is 42 francs.');
    const conn = server.connections[0]!;
    await server.until(() => conn.answers[0]?.status === 'completed', 10_000, 'spoken answer');
    expect(conn.answers[0]!.instructions).toContain('Your balance is 42 francs.');
    await until(
      () => bridge.playout.empty && loudWritten(leg, (f) => pcmu.decode(f), before).length >= 74,
      5000,
      'playout',
    );
    within(dominantFrequency(concat(loudWritten(leg, (f) => pcmu.decode(f), before).map((o) => o.pcm)), 8000), 600, 2);
    expect(server.violations).toEqual([]);
  });

  it('a Realtime endpoint that accepts TCP but never answers fails the call after connectTimeoutMs', async () => {
    const sockets: Socket[] = [];
    let released = 0;
    const silent = createTcpServer((s) => {
      sockets.push(s);
      s.on('close', () => released++).resume(); // read (and drop) the upgrade request, never answer
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          sockets.forEach((s) => s.destroy());
          silent.close(() => r());
        }),
    );
    const port = (silent.address() as AddressInfo).port;
    const { connector, newCall, clock } = await harness(
      {},
      { url: `ws://127.0.0.1:${port}/v1/realtime`, connectTimeoutMs: 400 },
    );
    const call = newCall();
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const t0 = Date.now();
    const err = await connector.connect(call, leg).then(
      () => undefined,
      (e: unknown) => e,
    );
    const took = Date.now() - t0;
    // It gave up because of its own 400 ms timer (not sooner, and not on some other error).
    expect(took).toBeGreaterThanOrEqual(399);
    expect((err as GatewayError).code).toBe('ai_connect_failed');
    expect(call.endReason?.cause).toBe('ai_connect_failed');
    expect(call.endReason?.detail).toBe(`[call ${call.id}] AI not ready within 400 ms`);
    expect(sockets.length).toBe(1);
    await until(() => released === 1, 5000, 'the gateway to release the socket');
    expect(clock.subscribers).toBe(0);
  });
});
