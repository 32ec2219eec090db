import { RealtimeBackend } from '../src/ai/realtime/backend.js';
import type { RealtimeHooks } from '../src/ai/realtime/session.js';
import { createCodec } from '../src/core/audio/codecs.js';
import { PCMU_8K } from '../src/core/audio/format.js';
import type { Bridge } from '../src/core/bridge.js';
import { CallConnector } from '../src/core/connector.js';
import { FrameClock } from '../src/core/frame-clock.js';
import { testLogger } from '../src/core/logger.js';
import { CallRegistry } from '../src/core/registry.js';
import { RealtimeTestServer } from '../test/peers/realtime/server.js';
import { frames, tone } from '../test/support/audio.js';
import { MemoryLeg } from '../test/support/memory-leg.js';
import { type BenchSection, summarize, table } from './stats.js';
import { benchRoute, routerFor } from './realtime-route.js';

const SESSIONS = 100;
const RUN_MS = 15_000;
const pcmu = createCodec(PCMU_8K);
const SILENCE = pcmu.silence();
/** Each caller: 600 ms of tone, then 2.4 s of silence, round and round (a turn every 3 s). */
const CYCLE = [...frames(tone(1000, 8000, 600, 8000), 160).map((f) => pcmu.encode(f)), ...Array(120).fill(SILENCE)];

/** A G.711 leg that talks in turns and notes when each frame was read and when AI audio was written. */
class TimedLeg extends MemoryLeg {
  readonly readAt = new WeakMap<Buffer, number>();
  private n: number;
  /** When the first delta of a new answer arrived (while nothing was playing). */
  awaitingSince: number | undefined;
  bridge: Bridge | undefined;
  constructor(
    callId: string,
    offset: number,
    private readonly down: number[],
  ) {
    super(callId, PCMU_8K, SILENCE);
    this.n = offset;
  }
  override readFrame(): Buffer {
    const f = Buffer.from(CYCLE[this.n++ % CYCLE.length]!); // a fresh buffer per frame, so it can be traced
    this.readAt.set(f, performance.now());
    return f;
  }
  override writeFrame(frame: Buffer): void {
    if (this.awaitingSince !== undefined && !frame.equals(SILENCE)) {
      this.down.push(performance.now() - this.awaitingSince);
      this.awaitingSince = undefined;
    }
  }
}

const ms = (v: number) => v.toFixed(2);

/**
 * 100 concurrent Realtime sessions (G.711 passthrough) against the local Realtime server in the
 * same process. Gateway-added latency only: caller frame read from the leg → its append written to
 * the socket; first audio delta of an answer received → its first frame handed to the leg.
 */
export async function benchRealtime(): Promise<BenchSection> {
  const server = new RealtimeTestServer({ toneMs: 1000 });
  await server.start();
  const up: number[] = [];
  const down: number[] = [];
  const legs = new Map<string, TimedLeg>();
  const lastItem = new Map<string, string>();
  const hooks: RealtimeHooks = {
    appendWritten(callId, frame) {
      const at = legs.get(callId)?.readAt.get(frame);
      if (at !== undefined) up.push(performance.now() - at);
    },
    deltaReceived(callId, itemId, receivedAt) {
      if (lastItem.get(callId) === itemId) return;
      lastItem.set(callId, itemId);
      const leg = legs.get(callId);
      if (leg?.bridge?.playout.empty) leg.awaitingSince = receivedAt;
    },
  };
  const route = benchRoute(server.url);
  const backend = new RealtimeBackend(route, hooks);
  const clock = new FrameClock();
  const lateness: number[] = [];
  clock.onLateness = (l) => lateness.push(l);
  const registry = new CallRegistry(testLogger());
  const connector = new CallConnector({
    router: routerFor(route),
    clock,
    backendFor: () => backend,
  });

  const t0 = performance.now();
  const calls = await Promise.all(
    Array.from({ length: SESSIONS }, async (_, i) => {
      await new Promise((r) => setTimeout(r, i * 10)); // stagger call arrival over 1 s
      const call = registry.create({
        front: 'test',
        from: `+2507880${String(i).padStart(5, '0')}`,
        to: '+250700000000',
      });
      const leg = new TimedLeg(call.id, Math.floor(Math.random() * CYCLE.length), down);
      legs.set(call.id, leg);
      const { bridge } = await connector.connect(call, leg);
      leg.bridge = bridge;
      return call;
    }),
  );
  const setupMs = performance.now() - t0;
  up.length = 0; // measure the steady state only
  down.length = 0;
  lateness.length = 0;
  const cpu0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, RUN_MS));
  const cpu = process.cpuUsage(cpu0);
  const answers = server.connections.reduce((n, c) => n + c.answers.length, 0);
  const appends = server.connections.reduce((n, c) => n + c.appendSizes.length, 0);
  await Promise.all(calls.map((c) => c.end({ by: 'remote', cause: 'bye' })));
  const violations = server.violations.length;
  await server.stop();

  const u = summarize(up);
  const d = summarize(down);
  const l = summarize(lateness);
  const cpuPct = ((cpu.user + cpu.system) / 1000 / RUN_MS) * 100;
  return {
    title: `OpenAI Realtime: ${SESSIONS} concurrent sessions (local Realtime server, G.711 passthrough)`,
    body: [
      `${SESSIONS} calls, each saying 600 ms of tone every 3 s and hearing a 1 s answer, for ${RUN_MS / 1000} s after a`,
      `${(setupMs / 1000).toFixed(1)} s ramp-up. The test server runs in the same process (its JSON, base64 and VAD work`,
      'is included in CPU and event-loop figures). Latencies are the gateway share only, in ms.',
      '',
      table(
        ['path', 'samples', 'p50 ms', 'p99 ms', 'mean ms'],
        [
          ['caller frame read from leg → append written to socket', up.length, ms(u.p50), ms(u.p99), ms(u.mean)],
          ['first answer delta received → first frame handed to leg', down.length, ms(d.p50), ms(d.p99), ms(d.mean)],
          ['media clock tick lateness', lateness.length, ms(l.p50), ms(l.p99), ms(l.mean)],
        ],
      ),
      '',
      `Answers: ${answers}; appends received: ${appends}; protocol violations: ${violations}; process CPU (gateway + server): ${cpuPct.toFixed(0)}% of one core;`,
      `clock ticks late (>5 ms): ${clock.stats.late}, skipped: ${clock.stats.skipped}.`,
      'The downlink figure is bounded by the 20 ms tick: audio waits for the next tick by design (pacing).',
    ].join('\n'),
  };
}
