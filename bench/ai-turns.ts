import { BackendRegistry } from '../src/ai/backends.js';
import { createCodec } from '../src/core/audio/codecs.js';
import { PCMU_8K } from '../src/core/audio/format.js';
import { CallConnector } from '../src/core/connector.js';
import { FrameClock } from '../src/core/frame-clock.js';
import { testLogger } from '../src/core/logger.js';
import { CallRegistry } from '../src/core/registry.js';
import type { LatencySample } from '../src/core/turn-latency.js';
import { RealtimeTestServer } from '../test/peers/realtime/server.js';
import { frames, tone } from '../test/support/audio.js';
import { MemoryLeg } from '../test/support/memory-leg.js';
import { type BenchSection, percentile, table } from './stats.js';
import { benchRoute, routerFor } from './realtime-route.js';

/** Calls in the run (BENCH_CALLS overrides, e.g. 10 for a quick local check). */
const CALLS = Number(process.env.BENCH_CALLS ?? 100);
/** Calls in progress at once. */
const CONCURRENCY = 20;
const pcmu = createCodec(PCMU_8K);
const CALLER_TURN = frames(tone(1000, 8000, 600, 8000), 160).map((f) => pcmu.encode(f));

/**
 * The two waits a caller notices, per call, through the real connector, bridge, media clock and
 * Realtime session against the local Realtime server (same process): answer → first AI audio at
 * the caller's leg (the greeting, firstTurn ai), and the caller's end of speech → first AI audio
 * (one 600 ms caller turn; server VAD with its 500 ms silence hangover, which is the AI's share).
 * The stand-in "thinks" 30 ms before its first delta: the AI figures are the stand-in's, the
 * gateway figures are ours.
 */
export async function benchAiTurns(): Promise<BenchSection> {
  const server = new RealtimeTestServer({ toneMs: 800 });
  await server.start();
  const route = benchRoute(server.url);
  const samples: LatencySample[] = [];
  const clock = new FrameClock();
  const registry = new CallRegistry(testLogger());
  const backends = new BackendRegistry();
  const connector = new CallConnector({
    router: routerFor(route),
    clock,
    backendFor: (r) => backends.backendFor(r),
    hooks: { onLatency: (s) => samples.push(s) },
  });
  let failed = 0;
  const oneCall = async (i: number) => {
    const call = registry.create({ front: 'test', from: `+2507880${String(i).padStart(5, '0')}`, to: '+250700000000' });
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    try {
      const { bridge } = await connector.connect(call, leg);
      await until(() => call.latency.answer !== undefined && bridge.playout.empty, 10_000);
      await new Promise((r) => setTimeout(r, 200));
      leg.feed(CALLER_TURN);
      await until(() => call.latency.turnCount >= 1, 10_000);
    } catch {
      failed++;
    } finally {
      await call.end({ by: 'remote', cause: 'bye' });
    }
  };
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(CONCURRENCY, CALLS) }, async () => {
      while (next < CALLS) await oneCall(next++);
    }),
  );
  const wallS = (performance.now() - t0) / 1000;
  const violations = server.violations.length;
  await server.stop();

  const row = (label: string, kind: LatencySample['kind'], share: 'totalMs' | 'gatewayMs' | 'aiMs') => {
    const v = samples
      .filter((s) => s.kind === kind)
      .map((s) => s[share])
      .sort((a, b) => a - b);
    return [label, v.length, percentile(v, 50).toFixed(1), percentile(v, 95).toFixed(1)];
  };
  return {
    title: `AI turns: answer → greeting and end of speech → reply (${CALLS} calls, local Realtime server)`,
    body: [
      `${CALLS} calls, ${Math.min(CONCURRENCY, CALLS)} at a time, G.711 µ-law passthrough, ${wallS.toFixed(1)} s; each call is greeted`,
      '(firstTurn ai), then says 600 ms of tone and waits for the reply. Measured at the leg boundary',
      '(src/core/turn-latency.ts); the AI share is the local stand-in, not OpenAI.',
      '',
      table(
        ['wait', 'share', 'samples', 'p50 ms', 'p95 ms'],
        [
          row('answer → first AI audio', 'answer', 'totalMs'),
          row('', 'answer', 'gatewayMs'),
          row('', 'answer', 'aiMs'),
          row('end of speech → first AI audio', 'turn', 'totalMs'),
          row('', 'turn', 'gatewayMs'),
          row('', 'turn', 'aiMs'),
        ].map((r, i) => [r[0]!, ['total', 'gateway', 'AI'][i % 3]!, ...r.slice(1)]),
      ),
      '',
      `Calls that did not complete both waits: ${failed}; protocol violations: ${violations}.`,
      "The gateway share is mostly the wait for the next 20 ms media tick (pacing by design); the turn's AI",
      "share includes the server VAD's 500 ms silence hangover.",
    ].join('\n'),
  };
}

async function until(pred: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
