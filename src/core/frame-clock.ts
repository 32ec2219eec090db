/**
 * The media clock: one drift-free timer shared by every bridge in the process, so a thousand
 * calls cost one timer, not a thousand. Ticks are scheduled against absolute time, so timer
 * lateness never accumulates; if the event loop stalls for more than a few frames the clock skips
 * ahead instead of bursting (a burst would just be dropped by the far end's jitter buffer) and
 * counts the skipped ticks.
 *
 * Calls are spread over PHASES slots of the 20 ms period (a new call joins the emptiest slot):
 * each call still gets exactly one tick every 20 ms, but the work of N calls runs as PHASES
 * short bursts instead of one long one, so socket I/O (RTP, SRTP, ICE) interleaves with it and
 * no single burst holds the event loop long enough to make other calls' packets late.
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

/** Counted per call frame (one listener × one tick), so late/ticks is the late-frame ratio. */
export interface ClockStats {
  ticks: number;
  /** Frames never delivered because the loop stalled past the catch-up limit. */
  skipped: number;
  /** Frames delivered more than 5 ms behind schedule. */
  late: number;
}

const MAX_CATCH_UP = 3;
const PHASES = 4;
const SLOT_MS = FRAME_MS / PHASES;

export class FrameClock {
  private readonly phases: Set<TickListener>[] = Array.from({ length: PHASES }, () => new Set());
  private readonly phaseOf = new Map<TickListener, Set<TickListener>>();
  private handle: unknown;
  private start = 0;
  private slot = 0;
  readonly stats: ClockStats = { ticks: 0, skipped: 0, late: 0 };
  /** Called with how late each tick ran (ms), for latency histograms. */
  onLateness: ((ms: number) => void) | undefined;

  constructor(private readonly timers: TimerHost = realTimers) {}

  subscribe(fn: TickListener): () => void {
    const phase = this.phases.reduce((a, b) => (b.size < a.size ? b : a));
    phase.add(fn);
    this.phaseOf.set(fn, phase);
    if (this.subscribers === 1) this.begin();
    return () => {
      this.phaseOf.get(fn)?.delete(fn);
      this.phaseOf.delete(fn);
      if (this.subscribers === 0) this.stop();
    };
  }

  get subscribers(): number {
    return this.phaseOf.size;
  }

  private begin(): void {
    this.start = this.timers.now();
    this.slot = 0;
    this.schedule();
  }

  private stop(): void {
    if (this.handle !== undefined) this.timers.clearTimeout(this.handle);
    this.handle = undefined;
  }

  private schedule(): void {
    const due = this.start + (this.slot + 1) * SLOT_MS;
    this.handle = this.timers.setTimeout(() => this.fire(), Math.max(0, due - this.timers.now()));
  }

  private fire(): void {
    this.handle = undefined;
    let behind = Math.floor((this.timers.now() - this.start) / SLOT_MS) - this.slot;
    const limit = MAX_CATCH_UP * PHASES;
    if (behind > limit) {
      this.stats.skipped += Math.floor((behind - limit) / PHASES) * this.subscribers;
      this.slot += behind - limit;
      behind = limit;
    }
    for (let i = 0; i < Math.max(1, behind); i++) {
      this.slot++;
      const listeners = this.phases[this.slot % PHASES]!;
      if (listeners.size === 0) continue;
      const lateness = this.timers.now() - (this.start + this.slot * SLOT_MS);
      this.stats.ticks += listeners.size;
      if (lateness > 5) this.stats.late += listeners.size;
      this.onLateness?.(lateness);
      const tick = Math.floor(this.slot / PHASES);
      for (const fn of listeners) {
        try {
          fn(tick);
        } catch {
          // A listener must never break the clock for other calls; bridges catch and log their own errors.
        }
      }
    }
    if (this.subscribers > 0) this.schedule();
  }
}
