import { RealtimeBackend } from '../src/ai/realtime/backend.js';
import { createCodec } from '../src/core/audio/codecs.js';
import { PCMU_8K } from '../src/core/audio/format.js';
import type { Bridge } from '../src/core/bridge.js';
import { CallConnector } from '../src/core/connector.js';
import { FrameClock } from '../src/core/frame-clock.js';
import { testLogger } from '../src/core/logger.js';
import { CallRegistry } from '../src/core/registry.js';
import { type RealtimeTestServerOptions, RealtimeTestServer } from '../test/peers/realtime/server.js';
import { frames, tone } from '../test/support/audio.js';
import { MemoryLeg } from '../test/support/memory-leg.js';
import { type BenchSection, summarize, table } from './stats.js';
import { benchRoute, routerFor } from './realtime-route.js';

const CALLS = 10;
const TURNS = 3;
const REPLY_MS = 5000;
const pcmu = createCodec(PCMU_8K);
const SILENT = pcmu.silence();
const CALLER_TONE = frames(tone(1000, 8000, 600, 8000), 160).map((f) => pcmu.encode(f));

interface ReplyFigures {
  /** 1 for a call's first reply. */
  turn: number;
  /** Silent runs inside the reply as the caller got it. */
  holes: number;
  /** Inserted silence inside the reply, ms. */
  holeMs: number;
  /** Prebuffer wait before the reply's first frame, ms (latency the playout added). */
  addedMs: number;
}

/** Silent runs between the first and the last audible frame of what the leg got. */
function holesIn(written: Buffer[]): { holes: number; frames: number } {
  const first = written.findIndex((f) => !f.equals(SILENT));
  let last = written.length - 1;
  while (last > first && written[last]!.equals(SILENT)) last--;
  let holes = 0;
  let n = 0;
  for (let i = Math.max(first, 0); i <= last; i++) {
    if (!written[i]!.equals(SILENT)) continue;
    n++;
    if (!written[i - 1]!.equals(SILENT)) holes++;
  }
  return { holes, frames: n };
}

async function scenario(opts: RealtimeTestServerOptions): Promise<ReplyFigures[]> {
  const server = new RealtimeTestServer({ toneMs: REPLY_MS, ...opts });
  await server.start();
  const route = benchRoute(server.url, { firstTurn: { mode: 'none' } });
  const backend = new RealtimeBackend(route);
  const registry = new CallRegistry(testLogger());
  const connector = new CallConnector({
    router: routerFor(route),
    clock: new FrameClock(),
    backendFor: () => backend,
  });
  const until = async (pred: () => boolean) => {
    while (!pred()) await new Promise((r) => setTimeout(r, 20));
  };
  const figures: ReplyFigures[] = [];
  // Connected one by one (so call i is the server's connection i), then talking all at once.
  const calls: { leg: MemoryLeg; bridge: Bridge; call: ReturnType<CallRegistry['create']> }[] = [];
  for (let i = 0; i < CALLS; i++) {
    const call = registry.create({ front: 'test', from: `+2507880${String(i).padStart(5, '0')}`, to: '+250700' });
    const leg = new MemoryLeg(call.id, PCMU_8K, SILENT);
    const { bridge } = await connector.connect(call, leg);
    calls.push({ call, leg, bridge });
  }
  await Promise.all(
    calls.map(async ({ call, leg, bridge }, i) => {
      const conn = server.connections[i]!;
      for (let t = 1; t <= TURNS; t++) {
        const from = leg.written.length;
        const before = { ...bridge.playout.stats };
        leg.feed(CALLER_TONE);
        await until(() => conn.answers[t - 1]?.status === 'completed');
        await until(() => bridge.playout.empty && !bridge.playout.streaming);
        const h = holesIn(leg.written.slice(from));
        figures.push({
          turn: t,
          holes: h.holes,
          holeMs: h.frames * 20,
          addedMs: (bridge.playout.stats.prebufferFrames - before.prebufferFrames) * 20,
        });
      }
      await call.end({ by: 'remote', cause: 'bye' });
    }),
  );
  await server.stop();
  return figures;
}

const fmt = (v: number) => v.toFixed(1);

/**
 * Playout under irregular AI audio: replies of 5 s streamed by the local Realtime server in odd-sized
 * deltas, either far ahead of real time (OpenAI's usual bursts) or at 0.9x real time (a model that
 * cannot keep up). Holes are silent runs inside a reply as the caller's leg got it.
 */
export async function benchPlayout(): Promise<BenchSection> {
  const rows: (string | number)[][] = [];
  for (const [name, opts] of [
    ['odd-sized deltas, bursts 8x real time', { chunks: 'irregular', pace: 'bursts', speedup: 8 }],
    ['odd-sized deltas, steady 0.9x real time', { chunks: 'irregular', pace: 'steady', speedup: 0.9 }],
  ] as const) {
    const f = await scenario(opts);
    const firsts = f.filter((x) => x.turn === 1);
    const later = f.filter((x) => x.turn > 1);
    const added = summarize(f.map((x) => x.addedMs));
    const mean = (xs: ReplyFigures[], k: 'holes' | 'holeMs') => xs.reduce((a, x) => a + x[k], 0) / (xs.length || 1);
    rows.push([
      name,
      f.length,
      fmt(mean(firsts, 'holes')),
      fmt(mean(later, 'holes')),
      fmt(mean(f, 'holeMs')),
      fmt(added.p50),
      fmt(added.p99),
    ]);
  }
  return {
    title: 'AI playout under irregular audio (adaptive prebuffer)',
    body: [
      `${CALLS} concurrent calls x ${TURNS} replies of ${REPLY_MS / 1000} s each, G.711 µ-law passthrough, local Realtime server`,
      'in the same process. Holes: silent runs inside a reply as written to the leg. Added latency: ticks the',
      "playout waited for its prebuffer before a reply's first frame (src/core/playout.ts).",
      '',
      table(
        [
          'AI stream',
          'replies',
          'holes / first reply',
          'holes / later reply',
          'inserted silence ms / reply',
          'added latency p50 ms',
          'added latency p99 ms',
        ],
        rows,
      ),
      '',
      'A model slower than real time must leave its deficit somewhere: the first reply of a call gets one',
      'refill pause instead of a hole every few frames; later replies start with the learned prebuffer.',
    ].join('\n'),
  };
}
