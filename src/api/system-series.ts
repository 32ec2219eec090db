import type { ClockStats } from '../core/frame-clock.js';
import type { Call } from '../core/call.js';
import type { CallRegistry } from '../core/registry.js';

/** What the system page charts, column-wise (uPlot's data layout): one entry per sample. */
export interface SystemSeries {
  intervalMs: number;
  /** Sample times, epoch seconds. */
  t: number[];
  /** Process CPU use over the last interval, percent of one core. */
  cpu: number[];
  rssMb: number[];
  heapMb: number[];
  /** Late frames / delivered frames over the last interval (0 when no frames ran). */
  lateRatio: number[];
  /** Active calls per `front:x`, `trunk:x`, `route:x` (0 where a key had no call at a sample). */
  calls: Record<string, number[]>;
}

/**
 * Samples the gateway's own figures (the same sources /metrics exports: the call registry, the
 * media clock's counters, process CPU and memory) every `intervalMs` into fixed-size rings, so the
 * console's system page gets history without a Prometheus. Memory is bounded: `capacity` samples,
 * and at most `maxKeys` call-count series (trunk and route names come from config, fronts are fixed;
 * the cap guards against a misconfiguration growing it without end). On the same tick it samples
 * each live call's quality (Call.qualityOverTime, at most `capacity` per call) for its call page.
 */
export class SystemSampler {
  private readonly t: number[] = [];
  private readonly cpu: number[] = [];
  private readonly rssMb: number[] = [];
  private readonly heapMb: number[] = [];
  private readonly lateRatio: number[] = [];
  private readonly calls = new Map<string, number[]>();
  private timer: NodeJS.Timeout | undefined;
  private lastCpu = process.cpuUsage();
  private lastAt = process.hrtime.bigint();
  private lastTicks: number;
  private lastLate: number;

  constructor(
    private readonly registry: CallRegistry,
    private readonly clock: Readonly<ClockStats>,
    readonly intervalMs: number,
    private readonly capacity: number,
    private readonly maxKeys = 64,
  ) {
    this.lastTicks = clock.ticks;
    this.lastLate = clock.late;
  }

  start(): void {
    this.timer ??= setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Take one sample now (the timer calls it; tests may too). */
  sample(): void {
    const now = process.hrtime.bigint();
    const elapsedUs = Number(now - this.lastAt) / 1000;
    const cpu = process.cpuUsage(this.lastCpu);
    this.lastCpu = process.cpuUsage();
    this.lastAt = now;
    const mem = process.memoryUsage();
    const ticks = this.clock.ticks - this.lastTicks;
    const late = this.clock.late - this.lastLate;
    this.lastTicks = this.clock.ticks;
    this.lastLate = this.clock.late;

    const counts = new Map<string, number>();
    for (const call of this.registry.list()) {
      sampleQuality(call, this.capacity);
      for (const key of [
        `front:${call.info.front}`,
        call.info.trunk ? `trunk:${call.info.trunk}` : '',
        call.route ? `route:${call.route}` : '',
      ])
        if (key) counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const n = this.t.length;
    for (const key of counts.keys())
      if (!this.calls.has(key) && this.calls.size < this.maxKeys) this.calls.set(key, new Array<number>(n).fill(0));

    this.t.push(Math.round(Date.now() / 100) / 10);
    this.cpu.push(elapsedUs > 0 ? round(((cpu.user + cpu.system) / elapsedUs) * 100) : 0);
    this.rssMb.push(round(mem.rss / 2 ** 20));
    this.heapMb.push(round(mem.heapUsed / 2 ** 20));
    this.lateRatio.push(ticks > 0 ? round(late / ticks, 4) : 0);
    for (const [key, ring] of this.calls) ring.push(counts.get(key) ?? 0);
    if (this.t.length > this.capacity)
      for (const ring of [this.t, this.cpu, this.rssMb, this.heapMb, this.lateRatio, ...this.calls.values()])
        ring.shift();
  }

  series(): SystemSeries {
    return {
      intervalMs: this.intervalMs,
      t: [...this.t],
      cpu: [...this.cpu],
      rssMb: [...this.rssMb],
      heapMb: [...this.heapMb],
      lateRatio: [...this.lateRatio],
      calls: Object.fromEntries([...this.calls].map(([k, v]) => [k, [...v]])),
    };
  }
}

const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;

/** Append one quality sample to a live call (caller leg = its first leg), keeping the last `capacity`. */
function sampleQuality(call: Call, capacity: number): void {
  const leg = call.legs[0];
  if (!leg || call.ended) return;
  const jitter = leg.quality().jitter;
  const levels = call.media?.bridge.levels;
  call.qualityOverTime.push({
    at: Date.now(),
    jitterMs: round(jitter?.jitterMs ?? 0),
    lost: jitter?.lost ?? 0,
    late: jitter?.late ?? 0,
    callerDb: levels?.callerDb ?? -120,
    aiDb: levels?.aiDb ?? -120,
  });
  if (call.qualityOverTime.length > capacity) call.qualityOverTime.splice(0, call.qualityOverTime.length - capacity);
}
