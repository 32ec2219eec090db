import { routeSchema } from '../src/config/schema.js';
import { createSocket } from 'node:dgram';
import type { AiBackend, AiSession, AiSessionEvents } from '../src/ai/session.js';
import { createCodec } from '../src/core/audio/codecs.js';
import { type AudioFormat, frameBytes, l16, PCMU_8K } from '../src/core/audio/format.js';
import { CallConnector } from '../src/core/connector.js';
import { FrameClock } from '../src/core/frame-clock.js';
import { testLogger } from '../src/core/logger.js';
import type { PlayedMark } from '../src/core/playout.js';
import { CallRegistry } from '../src/core/registry.js';
import { Router } from '../src/core/router.js';
import { TypedEmitter } from '../src/core/typed-emitter.js';
import { buildRtp, RtpPortPool } from '../src/sip/rtp.js';
import { RtpLeg } from '../src/sip/rtp-leg.js';
import { tone } from '../test/support/audio.js';
import { type AllocationFigures, allocationWindow, bytes, settledMemory } from './memory.js';
import { type BenchSection, table } from './stats.js';

/** 20 s per step = 1000 ticks, so a single late tick is exactly the 0.1 % limit. */
const RUN_MS = 20_000;
const LATE_LIMIT = 0.001; // < 0.1 % late frames

/** A local AI that costs (almost) nothing: counts caller frames, answers with a steady stream of one frame per 20 ms. */
class BenchAi extends TypedEmitter<AiSessionEvents> implements AiSession {
  frames = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly chunk: Buffer;
  constructor(readonly inputFormat: AudioFormat) {
    super();
    // 100 ms of audio every 100 ms keeps the playout fed (content is irrelevant to cost).
    this.chunk = Buffer.alloc(frameBytes(inputFormat)! * 5, inputFormat.codec === 'pcmu' ? 0x7e : 0x10);
  }
  get outputFormat(): AudioFormat {
    return this.inputFormat;
  }
  start(): Promise<void> {
    this.emit('ready');
    this.timer = setInterval(() => this.emit('audio', this.chunk, 'bench'), 100);
    return Promise.resolve();
  }
  sendAudio(): void {
    this.frames++;
  }
  playoutCleared(_m: PlayedMark): void {}
  close(reason: string): Promise<void> {
    clearInterval(this.timer);
    this.emit('closed', reason);
    return Promise.resolve();
  }
}

interface StepResult {
  calls: number;
  ticks: number;
  late: number;
  skipped: number;
  cpuPct: number;
  framesToAi: number;
  /** Steady-state memory per call (after full GCs, calls up vs none). */
  rssPerCall: number;
  heapPerCall: number;
  alloc: AllocationFigures;
}

async function runStep(calls: number, aiFormat: AudioFormat): Promise<StepResult> {
  const log = testLogger();
  const clock = new FrameClock();
  const registry = new CallRegistry(log);
  const backend: AiBackend = { kind: 'bench', open: () => new BenchAi(aiFormat) };
  const connector = new CallConnector({
    router: new Router({
      routes: { b: routeSchema.parse({ kind: 'local', greeting: '' }) },
      routing: { default: 'b', rules: [] },
      trunks: [],
    }),
    clock,
    backendFor: () => backend,
  });
  const pool = new RtpPortPool('127.0.0.1', 40000, 43999);
  // The carrier: one socket sending every call's 20 ms PCMU packet on a shared timer.
  const carrier = createSocket('udp4');
  await new Promise<void>((r) => carrier.bind(0, '127.0.0.1', () => r()));
  carrier.on('message', () => {}); // the gateway's downlink, discarded
  const pcmu = createCodec(PCMU_8K);
  const payload = pcmu.encode(tone(1000, 8000, 20, 8000));
  const m0 = settledMemory();
  const legs: RtpLeg[] = [];
  const all = [];
  for (let i = 0; i < calls; i++) {
    const call = registry.create({ front: 'sip', from: `+25078800${i}`, to: '+250700000000' });
    const ports = await pool.allocate(call.id);
    const leg = new RtpLeg({
      callId: call.id,
      log,
      ports,
      offer: {
        address: '127.0.0.1',
        port: carrier.address().port,
        rtcpPort: 9,
        codec: 'PCMU',
        payloadType: 0,
        dtmfPayloadType: undefined,
        direction: 'sendrecv',
      },
      direction: 'sendrecv',
      timeoutMs: 60_000,
    });
    legs.push(leg);
    all.push(call);
    await connector.connect(call, leg);
  }
  // Real carriers' packets for different calls arrive spread over the 20 ms, not in one burst:
  // four sender groups, 5 ms apart.
  const senders: NodeJS.Timeout[] = [];
  for (let g = 0; g < 4; g++) {
    const group = legs.filter((_, i) => i % 4 === g);
    let seq = 0;
    setTimeout(() => {
      senders.push(
        setInterval(() => {
          seq++;
          for (const leg of group) {
            const pkt = buildRtp(
              { payloadType: 0, marker: false, seq, timestamp: seq * 160, ssrc: leg.localPort },
              payload,
            );
            carrier.send(pkt, leg.localPort, '127.0.0.1');
          }
        }, 20),
      );
    }, g * 5);
  }
  await new Promise((r) => setTimeout(r, 1000)); // warm-up: jitter buffers fill, JIT settles
  const m1 = settledMemory();
  await new Promise((r) => setTimeout(r, 200)); // the forced GC's stall is counted before the window
  const s0 = { ...clock.stats };
  const cpu0 = process.cpuUsage();
  const allocation = allocationWindow();
  await new Promise((r) => setTimeout(r, RUN_MS));
  const alloc = allocation.stop();
  const cpu = process.cpuUsage(cpu0);
  const s1 = { ...clock.stats };
  for (const t of senders) clearInterval(t);
  const framesToAi = all.reduce((n, c) => n + (c.media?.bridge.stats.framesToAi ?? 0), 0);
  await Promise.all(all.map((c) => c.end({ by: 'remote', cause: 'bye' })));
  await new Promise<void>((r) => carrier.close(() => r()));
  return {
    calls,
    ticks: s1.ticks - s0.ticks,
    late: s1.late - s0.late + (s1.skipped - s0.skipped),
    skipped: s1.skipped - s0.skipped,
    cpuPct: ((cpu.user + cpu.system) / 1000 / RUN_MS) * 100,
    framesToAi,
    rssPerCall: (m1.rss - m0.rss) / calls,
    heapPerCall: (m1.heapUsed + m1.external - m0.heapUsed - m0.external) / calls,
    alloc,
  };
}

/**
 * How many concurrent G.711 calls one core carries with < 0.1 % late media-clock ticks, with a
 * local AI on the other side, for passthrough (AI takes PCMU) and transcoded (AI takes L16 24 kHz).
 * RTP comes from an in-process sender over loopback (its cost is included in the CPU figures).
 */
export async function benchSip(): Promise<BenchSection> {
  const rows: (string | number)[][] = [];
  const best: Record<string, number> = {};
  const perCall: Record<string, string> = {};
  for (const [name, fmt, steps] of [
    ['passthrough pcmu → pcmu', PCMU_8K, [100, 200, 400]],
    ['transcoded pcmu ⇄ l16/24k', l16(24000), [25, 50, 100]],
  ] as const) {
    for (const n of steps) {
      const r = await runStep(n, fmt);
      const lateRatio = r.ticks ? r.late / r.ticks : 1;
      rows.push([
        name,
        n,
        r.ticks,
        r.late,
        `${(lateRatio * 100).toFixed(3)}%`,
        `${r.cpuPct.toFixed(0)}%`,
        `${(r.cpuPct / n).toFixed(3)}%`,
        bytes(r.rssPerCall),
        bytes(r.heapPerCall),
        bytes(r.alloc.heapBytes / n / (RUN_MS / 1000)),
        `${r.alloc.gcPauseMs.toFixed(0)} / ${r.alloc.gcPauseMaxMs.toFixed(1)}`,
      ]);
      if (n === steps[0]) perCall[name] = `${((r.cpuPct / n) * 10).toFixed(2)} ms CPU per call-second`;
      // Every step runs (a shared machine makes single late ticks noisy); stop only at saturation.
      if (lateRatio < LATE_LIMIT) best[name] = Math.max(best[name] ?? 0, n);
      if (r.cpuPct > 95) break;
    }
  }
  return {
    title: 'SIP: concurrent G.711 calls per core (RTP legs + bridge + local AI)',
    body: [
      `Each step runs N calls for ${RUN_MS / 1000} s after a 1 s warm-up; a step passes when fewer than 0.1 % of media-clock`,
      'ticks ran late (> 5 ms) or were skipped. RTP senders are in the same process (one loopback socket, one timer).',
      'Memory per call: RSS and heap + external growth with the calls up against none, both after full GCs (bench/memory.ts).',
      'JS allocated per call-second: heap growth between collections over the window, per call (Buffer backing stores not',
      'included); GC pause: total / longest collection in the window, in ms (each one delays the media clock).',
      '',
      table(
        [
          'path',
          'calls',
          'ticks',
          'late+skipped',
          'late %',
          'process CPU',
          'CPU per call',
          'RSS / call',
          'heap+external / call',
          'JS allocated / call-s',
          'GC pause ms (total / max)',
        ],
        rows,
      ),
      '',
      ...Object.entries(best).map(
        ([k, v]) => `- ${k}: sustained ${v} calls (${perCall[k] ?? 'n/a'} at the first step)`,
      ),
    ].join('\n'),
  };
}
