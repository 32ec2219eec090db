/**
 * The media clock: one drift-free 20 ms tick shared by every bridge in the process, so a
 * thousand calls cost one timer, not a thousand. Ticks are scheduled against absolute time
 * (start + n·20 ms), so timer lateness never accumulates; if the event loop stalls for more
 * than a few frames the clock skips ahead instead of bursting (a burst would just be dropped
 * by the far end's jitter buffer) and counts the skipped ticks as late.
 */
import { FRAME_MS } from './audio/format.js';

export interface TimerHost {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: TimerHost = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export type TickListener = (tick: number) => void;

export interface ClockStats {
  ticks: number;
  skipped: number;
  /** Ticks that ran more than 5 ms behind schedule. */
  late: number;
}

const MAX_CATCH_UP = 3;

export class FrameClock {
  private readonly listeners = new Set<TickListener>();
  private handle: unknown;
  private start = 0;
  private n = 0;
  readonly stats: ClockStats = { ticks: 0, skipped: 0, late: 0 };
  /** Called with how late each tick ran (ms), for latency histograms. */
  onLateness: ((ms: number) => void) | undefined;

  constructor(private readonly timers: TimerHost = realTimers) {}

  subscribe(fn: TickListener): () => void {
    this.listeners.add(fn);
    if (this.listeners.size === 1) this.begin();
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size === 0) this.stop();
    };
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  private begin(): void {
    this.start = this.timers.now();
    this.n = 0;
    this.schedule();
  }

  private stop(): void {
    if (this.handle !== undefined) this.timers.clearTimeout(this.handle);
    this.handle = undefined;
  }

  private schedule(): void {
    const due = this.start + (this.n + 1) * FRAME_MS;
    this.handle = this.timers.setTimeout(() => this.fire(), Math.max(0, due - this.timers.now()));
  }

  private fire(): void {
    this.handle = undefined;
    let behind = Math.floor((this.timers.now() - this.start) / FRAME_MS) - this.n;
    if (behind > MAX_CATCH_UP) {
      this.stats.skipped += behind - MAX_CATCH_UP;
      this.n += behind - MAX_CATCH_UP;
      behind = MAX_CATCH_UP;
    }
    for (let i = 0; i < Math.max(1, behind); i++) {
      this.n++;
      const lateness = this.timers.now() - (this.start + this.n * FRAME_MS);
      this.stats.ticks++;
      if (lateness > 5) this.stats.late++;
      this.onLateness?.(lateness);
      for (const fn of this.listeners) {
        try {
          fn(this.n);
        } catch {
          // A listener must never break the clock for other calls; bridges catch and log their own errors.
        }
      }
    }
    if (this.listeners.size > 0) this.schedule();
  }
}
