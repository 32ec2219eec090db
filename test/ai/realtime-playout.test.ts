import { afterEach, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Bridge } from '../../src/core/bridge.js';
import { startRealtimeRig } from '../peers/realtime/rig.js';
import { RealtimeTestServer, type RealtimeTestServerOptions } from '../peers/realtime/server.js';
import { frames, tone } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { MemoryLeg } from '../support/memory-leg.js';

/**
 * Playout of AI audio that arrives unkindly: odd-sized deltas (not frame-aligned) streamed slower
 * than real time. Every frame the caller gets is compared with the answer the server generated,
 * so a hole (a silent frame inside the reply) or a padded partial frame cannot hide.
 */

const pcmu = createCodec(PCMU_8K);
const SILENT = pcmu.silence();
const ulaw = (pcm: Int16Array) => Buffer.concat(frames(pcm, 160).map((f) => pcmu.encode(f)));
const CALLER_TONE = frames(tone(1000, 8000, 600, 8000), 160).map((f) => pcmu.encode(f));

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

async function callWith(opts: RealtimeTestServerOptions) {
  const { server, connector, newCall, stop } = await startRealtimeRig(opts, { firstTurn: { mode: 'none' } });
  cleanups.push(stop);
  const call = newCall();
  const leg = new MemoryLeg(call.id, PCMU_8K, SILENT);
  const { bridge } = await connector.connect(call, leg);
  return { server, leg, bridge, conn: server.connections[0]! };
}

/**
 * The reply as the caller got it: from its first to its last non-silent frame. `holes` are runs of
 * silent frames inside it; `audio` the rest, which must be the generated answer byte for byte.
 */
function reply(written: Buffer[]) {
  const first = written.findIndex((f) => !f.equals(SILENT));
  let last = written.length - 1;
  while (last > first && written[last]!.equals(SILENT)) last--;
  const span = written.slice(first, last + 1);
  let holes = 0;
  let holeFrames = 0;
  span.forEach((f, i) => {
    if (!f.equals(SILENT)) return;
    holeFrames++;
    if (i === 0 || !span[i - 1]!.equals(SILENT)) holes++;
  });
  return { holes, holeFrames, audio: Buffer.concat(span.filter((f) => !f.equals(SILENT))) };
}

async function turn(
  server: RealtimeTestServer,
  leg: MemoryLeg,
  bridge: Bridge,
  conn: RealtimeTestServer['connections'][number],
  n: number,
) {
  const from = leg.written.length;
  leg.feed(CALLER_TONE);
  await server.until(() => conn.answers[n - 1]?.status === 'completed', 20_000, `answer ${n}`);
  await waitFor(() => bridge.playout.empty && !bridge.playout.streaming, 20_000, `answer ${n} played`);
  return reply(leg.written.slice(from));
}

describe('AI playout under irregular, slower-than-real-time audio', () => {
  it('odd-sized deltas at 0.9x real time: at most one pause in the first reply, none after; audio bit-exact', async () => {
    const { server, leg, bridge, conn } = await callWith({
      chunks: 'irregular',
      pace: 'steady',
      speedup: 0.9,
      toneMs: 5000,
      seed: 7,
    });
    const first = await turn(server, leg, bridge, conn, 1);
    // The deltas really were unkind: odd byte counts, not 20 ms frames, 5 s of audio in all.
    const sizes = conn.answers[0]!.deltaBytes;
    expect(sizes.filter((b) => b % 2 === 1).length).toBeGreaterThanOrEqual(sizes.length - 1);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(40_000);
    // ...and slower than real time: the last delta came ~10 % later than real time would have it.
    const { firstDeltaAt, lastDeltaAt } = conn.answers[0]!;
    expect(lastDeltaAt! - firstDeltaAt!).toBeGreaterThan(5000);
    // Every byte of the answer reached the caller in order, nothing padded into it.
    expect(first.audio).toEqual(ulaw(tone(600, 8000, 5000, 8000)));
    // Without the adaptive prebuffer this reply had dozens of holes (a padded or missing frame
    // whenever less than a frame was queued); now the deficit of a slow model is one refill pause.
    expect(first.holes).toBeLessThanOrEqual(1);
    expect(bridge.playout.stats.underruns).toBe(first.holes);

    // The second reply starts with the learned prebuffer and plays through without a hole.
    const second = await turn(server, leg, bridge, conn, 2);
    expect(second.audio).toEqual(ulaw(tone(800, 8000, 5000, 8000)));
    expect(second.holes).toBe(0);
    expect(bridge.playout.stats.underruns).toBe(first.holes);
    expect(server.violations).toEqual([]);
  }, 60_000);

  it('odd-sized deltas faster than real time: no hole, no padding, no prebuffer wait', async () => {
    const { server, leg, bridge, conn } = await callWith({ chunks: 'irregular', toneMs: 2000, seed: 11 });
    const r = await turn(server, leg, bridge, conn, 1);
    expect(r.audio).toEqual(ulaw(tone(600, 8000, 2000, 8000)));
    expect(r.holes).toBe(0);
    expect(bridge.playout.stats).toEqual({ underruns: 0, holeFrames: 0, prebufferFrames: 0 });
  }, 30_000);
});
