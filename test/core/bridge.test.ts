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
import { waitFor } from '../support/gateway.js';
import { MemoryLeg } from '../support/memory-leg.js';

const log = testLogger();

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
    let maxLateness = 0;
    clock.onLateness = (ms) => (maxLateness = Math.max(maxLateness, ms));
    const call = registry.create({ front: 'test', from: '+250788000001', to: '+250700000000' });
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    cleanup = () => call.end({ by: 'gateway', cause: 'test_done' });
    const { bridge } = await connector.connect(call, leg);
    expect(call.state).toBe('bridged');
    expect(bridge.passthrough).toBe(false); // local agent works in L16 8 kHz
    // Greeting: wait until it has played out (its response done and the playout drained).
    await waitFor(() => call.transcript.length === 1 && bridge.playout.empty, 10_000, 'greeting played');
    const greeting = decodeAll(leg.written);
    expect(dbfsOf(greeting)).toBeGreaterThan(-40); // speech energy reached the leg
    expect(leg.written.every((f) => f.length === 160)).toBe(true);
    // Pacing: one frame per tick. The median gap is one tick (robust to the odd event-loop stall of a
    // loaded machine, after which the clock catches up back to back), and the greeting took at least
    // its own length, less how late its first tick ran: never burst out faster than real time.
    const gaps = leg.writeTimes
      .slice(1)
      .map((t, i) => t - leg.writeTimes[i]!)
      .sort((a, b) => a - b);
    expect(Math.abs(gaps[gaps.length >> 1]! - 20)).toBeLessThanOrEqual(3);
    expect(leg.writeTimes.at(-1)! - leg.writeTimes[0]!).toBeGreaterThanOrEqual(
      (leg.written.length - 1) * 20 - maxLateness,
    );

    // Caller says 600 ms of 1 kHz, then silence: the agent echoes it.
    const before = leg.written.length;
    leg.feed(ulawFrames(tone(1000, 8000, 600, 8000)));
    await waitFor(() => call.transcript.length === 3 && bridge.playout.empty, 10_000, 'echo played');
    const echoed = decodeAll(leg.written.slice(before));
    const loud = frames(echoed, 160).filter((f) => dbfsOf(f) > -30);
    expect(loud.length).toBe(30); // all 600 ms of the utterance came back (the VAD's pre-roll keeps its start)
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
    await waitFor(() => leg.written.filter((f) => dbfsOf(pcmu.decode(f)) > -40).length >= 10, 5000, 'greeting');
    let writtenAtSpeech = -1;
    let writtenAtStop = -1;
    session.on('speech_started', () => (writtenAtSpeech = leg.written.length));
    session.on('speech_stopped', () => (writtenAtStop = leg.written.length));
    leg.feed(ulawFrames(tone(500, 8000, 300, 8000)));
    await waitFor(() => writtenAtStop >= 0, 5000, 'speech_stopped');
    expect(bridge.stats.bargeIns).toBe(1);
    expect(bridge.stats.lastBargeInMs!).toBeLessThan(5);
    // From the frame after speech_started until the caller stopped, the leg got only silence: the
    // greeting was cleared at once, not faded or finished.
    const during = leg.written.slice(writtenAtSpeech, writtenAtStop);
    expect(during.length).toBeGreaterThan(0);
    expect(during.filter((f) => dbfsOf(pcmu.decode(f)) > -60)).toEqual([]);
  });

  it('an Opus leg is bridged through Opus decode/encode at 24 kHz', async () => {
    const { registry, connector } = setup();
    const call = registry.create({ front: 'test', from: 'a', to: 'b' });
    const opus = createCodec(OPUS_48K, 24000);
    const leg = new MemoryLeg(call.id, OPUS_48K, opus.silence());
    cleanup = () => call.end({ by: 'gateway', cause: 'test_done' });
    const { bridge, session } = await connector.connect(call, leg);
    expect(session.inputFormat.sampleRate).toBe(24000);
    await waitFor(() => call.transcript.length === 1 && bridge.playout.empty, 10_000, 'greeting played');
    // The caller's 1 kHz goes up through Opus decode and comes back (echoed) through Opus encode.
    const before = leg.written.length;
    leg.feed(frames(tone(1000, 24000, 600, 8000), 480).map((f) => opus.encode(f)));
    await waitFor(() => call.transcript.length === 3 && bridge.playout.empty, 10_000, 'echo played');
    const dec = createCodec(OPUS_48K, 24000);
    const echoed = frames(concat(leg.written.slice(before).map((p) => dec.decode(p))), 480).filter(
      (f) => dbfsOf(f) > -30,
    );
    expect(echoed.length).toBeGreaterThanOrEqual(28); // ~600 ms (Opus's own onset smearing aside)
    expect(echoed.length).toBeLessThanOrEqual(32);
    expect(Math.abs(dominantFrequency(concat(echoed), 24000) - 1000)).toBeLessThan(20);
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
    await waitFor(() => b2.bridge.stats.framesToAi >= 15, 5000, '15 frames on the good call');
    // Every tick of the broken call read one bad frame: counted once each (the downlink ran every
    // tick too), none reached its AI. The good call lost nothing.
    const s1 = b1.bridge.stats;
    expect(s1.badFrames).toBe(s1.framesToLeg + s1.silenceToLeg);
    expect(s1.framesToAi).toBe(0);
    expect(b2.bridge.stats.badFrames).toBe(0);
    expect(b2.bridge.stats.framesToAi).toBe(b2.bridge.stats.framesToLeg + b2.bridge.stats.silenceToLeg);
    expect(bad.state).toBe('bridged');
  });
});
