import { routeSchema } from '../../src/config/schema.js';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalAgentBackend } from '../../src/ai/local/agent.js';
import { createCodec } from '../../src/core/audio/codecs.js';
import { OPUS_48K, PCMU_8K } from '../../src/core/audio/format.js';
import { CallConnector } from '../../src/core/connector.js';
import { FrameClock } from '../../src/core/frame-clock.js';
import { testLogger } from '../../src/core/logger.js';
import { CallRegistry } from '../../src/core/registry.js';
import { Router } from '../../src/core/router.js';
import { concat, dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { MemoryLeg } from '../support/memory-leg.js';

const log = testLogger();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup() {
  const clock = new FrameClock();
  const registry = new CallRegistry(log);
  const router = new Router({
    routes: { local: routeSchema.parse({ kind: 'local', greeting: 'Hello caller.' }) },
    routing: { default: 'local', rules: [] },
    trunks: [],
  });
  const connector = new CallConnector({
    router,
    clock,
    backendFor: (r) => new LocalAgentBackend(r.config as never),
  });
  return { clock, registry, connector };
}

const pcmu = createCodec(PCMU_8K);
const decodeAll = (bufs: Buffer[]) => concat(bufs.map((b) => pcmu.decode(b)));
const ulawFrames = (pcm: Int16Array) => frames(pcm, 160).map((f) => pcmu.encode(f));

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

describe('Bridge with the local agent', () => {
  it('plays the greeting paced at 20 ms, then echoes the caller (1 kHz in → 1 kHz out)', async () => {
    const { clock, registry, connector } = setup();
    const call = registry.create({ front: 'test', from: '+250788000001', to: '+250700000000' });
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    cleanup = () => call.end({ by: 'gateway', cause: 'test_done' });
    const { bridge } = await connector.connect(call, leg);
    expect(call.state).toBe('bridged');
    expect(bridge.passthrough).toBe(false); // local agent works in L16 8 kHz
    // Greeting: wait until it has played out.
    const t0 = Date.now();
    while (!bridge.playout.empty || leg.written.length < 20) {
      if (Date.now() - t0 > 10_000) throw new Error('greeting never finished');
      await sleep(50);
    }
    const greeting = decodeAll(leg.written);
    expect(dbfsOf(greeting)).toBeGreaterThan(-40); // speech energy reached the leg
    expect(leg.written.every((f) => f.length === 160)).toBe(true);
    // Pacing: frames were written one per tick; 20 ms apart on average, never bursty.
    const gaps = leg.writeTimes.slice(1).map((t, i) => t - leg.writeTimes[i]!);
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    expect(mean).toBeGreaterThan(17);
    expect(mean).toBeLessThan(23);

    // Caller says 600 ms of 1 kHz, then silence: the agent echoes it.
    const before = leg.written.length;
    leg.feed(ulawFrames(tone(1000, 8000, 600, 8000)));
    while (call.transcript.filter((t) => t.role === 'caller').length === 0) {
      if (Date.now() - t0 > 15_000) throw new Error('no echo');
      await sleep(50);
    }
    await sleep(900);
    const echoed = decodeAll(leg.written.slice(before));
    const loud = frames(echoed, 160).filter((f) => dbfsOf(f) > -30);
    expect(loud.length).toBeGreaterThanOrEqual(25); // ≥ 500 ms of the 600 ms utterance came back
    expect(Math.abs(dominantFrequency(concat(loud), 8000) - 1000)).toBeLessThan(20);
    expect(call.transcript.map((t) => t.role)).toEqual(['ai', 'caller', 'ai']);
    await call.end({ by: 'remote', cause: 'bye' });
    expect(clock.subscribers).toBe(0);
  });

  it('barge-in clears the greeting within one frame of speech being detected', async () => {
    const { registry, connector } = setup();
    const call = registry.create({ front: 'test', from: 'a', to: 'b' });
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    cleanup = () => call.end({ by: 'gateway', cause: 'test_done' });
    const { bridge, session } = await connector.connect(call, leg);
    while (leg.written.length < 10) await sleep(20);
    let writtenAtSpeech = -1;
    session.on('speech_started', () => (writtenAtSpeech = leg.written.length));
    leg.feed(ulawFrames(tone(500, 8000, 300, 8000)));
    while (writtenAtSpeech < 0) await sleep(10);
    await sleep(100);
    expect(bridge.stats.bargeIns).toBe(1);
    expect(bridge.stats.lastBargeInMs!).toBeLessThan(5);
    // The first frame written after speech_started is already silence (0xff in µ-law).
    const next = leg.written[writtenAtSpeech]!;
    expect(dbfsOf(pcmu.decode(next))).toBeLessThan(-60);
  });

  it('an Opus leg is bridged through Opus decode/encode at 24 kHz', async () => {
    const { registry, connector } = setup();
    const call = registry.create({ front: 'test', from: 'a', to: 'b' });
    const opus = createCodec(OPUS_48K, 24000);
    const leg = new MemoryLeg(call.id, OPUS_48K, opus.silence());
    cleanup = () => call.end({ by: 'gateway', cause: 'test_done' });
    const { session } = await connector.connect(call, leg);
    expect(session.inputFormat.sampleRate).toBe(24000);
    while (leg.written.length < 30) await sleep(20);
    const dec = createCodec(OPUS_48K, 24000);
    const pcm = concat(leg.written.map((p) => dec.decode(p)));
    expect(dbfsOf(pcm)).toBeGreaterThan(-45);
  });

  it('a leg hang-up ends the call, closes the AI and releases the clock; DTMF reaches the call', async () => {
    const { clock, registry, connector } = setup();
    const call = registry.create({ front: 'test', from: 'a', to: 'b' });
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { session } = await connector.connect(call, leg);
    const digits: string[] = [];
    call.on('dtmf', (d) => digits.push(d));
    let aiClosed = '';
    session.on('closed', (r) => (aiClosed = r));
    leg.dtmf('5');
    leg.hangup({ by: 'remote', cause: 'bye' });
    await new Promise((r) => call.once('ended', r));
    expect(digits).toEqual(['5']);
    expect(aiClosed).toBe('bye');
    expect(leg.closedWith?.cause).toBe('bye');
    expect(registry.size).toBe(0);
    expect(clock.subscribers).toBe(0);
    expect(call.endReason).toEqual({ by: 'remote', cause: 'bye' });
  });

  it('bad frames from a broken leg are counted, not thrown, and other calls carry on', async () => {
    const { registry, connector } = setup();
    const bad = registry.create({ front: 'test', from: 'a', to: 'b' });
    const good = registry.create({ front: 'test', from: 'c', to: 'd' });
    const badLeg = new MemoryLeg(bad.id, PCMU_8K, Buffer.alloc(7));
    const goodLeg = new MemoryLeg(good.id, PCMU_8K, pcmu.silence());
    cleanup = async () => {
      await bad.end({ by: 'gateway', cause: 'test_done' });
      await good.end({ by: 'gateway', cause: 'test_done' });
    };
    const b1 = await connector.connect(bad, badLeg);
    const b2 = await connector.connect(good, goodLeg);
    await sleep(300);
    expect(b1.bridge.stats.badFrames).toBeGreaterThan(5);
    expect(b2.bridge.stats.badFrames).toBe(0);
    expect(b2.bridge.stats.framesToAi).toBeGreaterThan(5);
    expect(bad.state).toBe('bridged');
  });
});
