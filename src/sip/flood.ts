import type { Logger } from '../core/logger.js';

/**
 * Flood resistance for the embedded engine (issue 12): what a stranger on the internet can make us
 * do before any transaction state exists. Requests from sources no trunk allows (and outside any
 * dialog) get one stateless 403, or nothing; INVITE/REGISTER/OPTIONS are rate-limited per source;
 * out-of-dialog work is capped; and warnings about all of it are sampled, so a flood costs a few
 * log lines, not one per packet. Hand-written: the few npm rate limiters are HTTP middleware or
 * need Redis; a token bucket per key is a dozen lines.
 */
export interface FloodLimits {
  /** Sustained requests per second per source IP (burst: twice that). */
  invitePerSec: number;
  registerPerSec: number;
  optionsPerSec: number;
  /** Server transactions kept at once (each holds a response for 32 s). */
  maxServerTransactions: number;
  /** Dialogs plus INVITEs being answered. */
  maxDialogs: number;
}

export const DEFAULT_FLOOD_LIMITS: FloodLimits = {
  invitePerSec: 50,
  registerPerSec: 10,
  optionsPerSec: 20,
  maxServerTransactions: 10_000,
  maxDialogs: 5_000,
};

export type RejectReason = 'unknown_source' | 'rate_limited' | 'overload';

export interface InboundGuardOptions {
  /** Whether a source may open transactions (the front's trunk check); none: everyone may. */
  isKnownSource?: (address: string) => boolean;
  /** Unknown sources: one stateless 403 (reject) or silence (drop). */
  unknownSource: 'reject' | 'drop';
  limits: FloodLimits;
  log: Logger;
  /** Each request refused here (the front counts them in Prometheus). */
  onReject?: (reason: RejectReason, method: string) => void;
}

/** What the engine does with a request before any state: go on, answer statelessly, or drop it. */
export type Admission = { ok: true } | { ok: false; reply?: { status: number; reason: string; retryAfter?: number } };

/** Sources whose buckets we keep at most (oldest forgotten first: a spoofed flood cannot grow it). */
const MAX_SOURCES = 20_000;

export class InboundGuard {
  private readonly buckets: Record<string, TokenBuckets>;
  /** Stateless 403s per unknown source: at most this many per second each, then silence. */
  private readonly strangers = new TokenBuckets(5, MAX_SOURCES);
  readonly sampler: LogSampler;
  readonly rejected: Record<RejectReason, number> = { unknown_source: 0, rate_limited: 0, overload: 0 };

  constructor(private readonly opts: InboundGuardOptions) {
    const l = opts.limits;
    this.buckets = {
      INVITE: new TokenBuckets(l.invitePerSec, MAX_SOURCES),
      REGISTER: new TokenBuckets(l.registerPerSec, MAX_SOURCES),
      OPTIONS: new TokenBuckets(l.optionsPerSec, MAX_SOURCES),
    };
    this.sampler = new LogSampler(opts.log);
  }

  /**
   * Step 1, for a request outside any dialog (in-dialog ones belong to their dialog: its Call-ID
   * and tags are unguessable), before it is even validated: is `address` a source that may open
   * transactions? A stranger gets one stateless 403 (at most a few per second each) or nothing.
   */
  admitUnknown(method: string, address: string): Admission {
    if (!this.opts.isKnownSource || this.opts.isKnownSource(address)) return { ok: true };
    this.reject('unknown_source', method, address);
    if (this.opts.unknownSource === 'drop' || method === 'ACK' || !this.strangers.take(address)) return { ok: false };
    return { ok: false, reply: { status: 403, reason: 'Forbidden (unknown source address)' } };
  }

  /** Step 2, for a new transaction from a known source: within its INVITE/REGISTER/OPTIONS rate? */
  admitRate(method: string, address: string): Admission {
    const bucket = this.buckets[method];
    if (bucket && !bucket.take(address)) {
      this.reject('rate_limited', method, address);
      return { ok: false, reply: { status: 503, reason: 'Service Unavailable (rate limited)', retryAfter: 1 } };
    }
    return { ok: true };
  }

  /** Out-of-dialog work refused because a cap is reached. */
  overload(method: string, address: string, what: string): Admission {
    this.reject('overload', method, address, what);
    return { ok: false, reply: { status: 503, reason: `Service Unavailable (${what})`, retryAfter: 5 } };
  }

  private reject(reason: RejectReason, method: string, address: string, detail?: string): void {
    this.rejected[reason]++;
    this.opts.onReject?.(reason, method);
    this.sampler.warn(reason, { from: address, method, detail }, `SIP request refused: ${reason}`);
  }
}

/** Token buckets by key (rate per second, burst twice that), bounded in keys. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly ratePerSec: number,
    private readonly maxKeys: number,
    private readonly now: () => number = Date.now,
  ) {}

  take(key: string): boolean {
    const now = this.now();
    const burst = Math.max(1, 2 * this.ratePerSec);
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
      b = { tokens: burst, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * this.ratePerSec);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}

/**
 * Warn logs rate-limited per key: the first in each window is logged, the rest counted and
 * reported (`suppressed: n`) with the next one logged after the window.
 */
export class LogSampler {
  private readonly keys = new Map<string, { windowStart: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  warn(key: string, obj: Record<string, unknown>, msg: string): void {
    const now = this.now();
    const k = this.keys.get(key);
    if (k && now - k.windowStart < this.windowMs) {
      k.suppressed++;
      return;
    }
    if (!k && this.keys.size >= 100) return; // keys are reasons, not sources: this never fills
    this.log.warn(k?.suppressed ? { ...obj, suppressed: k.suppressed } : obj, msg);
    this.keys.set(key, { windowStart: now, suppressed: 0 });
  }
}
