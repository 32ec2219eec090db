import type { Logger } from '../core/logger.js';

/**
 * RFC 4028 session timers, shared by inbound calls (front.ts) and outbound legs (dialer.ts): the
 * negotiation rules (who refreshes, which interval, what the 2xx must say) as pure functions, and a
 * SessionTimer that refreshes when we are the refresher or hangs up when the far end stops refreshing.
 */

/** Longest interval we accept: a day (far below setTimeout's 2^31 ms limit; a longer one is clamped). */
export const MAX_SESSION_EXPIRES_SEC = 86_400;

export interface SessionExpires {
  interval: number;
  /** Relative to the transaction that carried it: `uac` is the request's sender. */
  refresher?: 'uac' | 'uas';
}

/** Session-Expires (or its compact form `x`) value: `1800;refresher=uac`. Undefined when absent or garbled. */
export function parseSessionExpires(value: string | undefined): SessionExpires | undefined {
  const m = /^\s*(\d{1,12})\s*(?:;(.*))?$/.exec(value ?? '');
  if (!m) return undefined;
  const r = /(?:^|;)\s*refresher\s*=\s*(uac|uas)\s*(?:;|$)/i.exec(m[2] ?? '');
  return { interval: Number(m[1]), refresher: r ? (r[1]!.toLowerCase() as 'uac' | 'uas') : undefined };
}

/** Whether an option tag (timer, 100rel) is in any of a request's Supported/Require headers. */
export function hasOptionTag(values: (string | undefined)[], tag: string): boolean {
  return values.some((v) => (v ?? '').split(',').some((t) => t.trim().toLowerCase() === tag));
}

/** The agreed session timer of a dialog, from our point of view. */
export interface SessionTerms {
  interval: number;
  weRefresh: boolean;
}

export type HeaderReader = (name: string) => string | undefined;

/** The far end's timer support, read from a request it sent. */
const supportsTimer = (h: HeaderReader) => hasOptionTag([h('supported'), h('k'), h('require')], 'timer');

export type UasNegotiation =
  { terms: SessionTerms; headers: Record<string, string> } | { tooSmall: true; minSe: number } | undefined;

/**
 * RFC 4028 §9, the UAS side of an INVITE, re-INVITE or UPDATE that asks for a session timer: the
 * request's refresher if it gave one (unless it hands the job to us and we cannot refresh), else
 * we keep `current`'s refresher when the UAC supports timers, and must be the refresher (`uas`)
 * when it does not. Returns the terms and the headers our 2xx must carry, a 422 when the interval
 * is below our minimum, or undefined when the request asks for no timer.
 */
export function negotiateAsUas(
  header: HeaderReader,
  opts: { minSec: number; canRefresh: boolean; current?: SessionTerms },
): UasNegotiation {
  const se = parseSessionExpires(header('session-expires') ?? header('x'));
  if (!se) return undefined;
  if (se.interval < opts.minSec) return { tooSmall: true, minSe: opts.minSec };
  const interval = Math.min(se.interval, MAX_SESSION_EXPIRES_SEC);
  const supported = supportsTimer(header);
  let refresher: 'uac' | 'uas';
  if (!supported) refresher = 'uas';
  else if (se.refresher) refresher = se.refresher;
  else refresher = opts.current?.weRefresh ? 'uas' : 'uac';
  // Only a UAC that supports timers can be made the refresher; without either side refreshing
  // the timer is off (the UAC ignores what it does not support).
  if (refresher === 'uas' && !opts.canRefresh) {
    if (!supported) return undefined;
    refresher = 'uac';
  }
  const headers: Record<string, string> = { 'session-expires': `${interval};refresher=${refresher}` };
  if (supported) headers.require = 'timer';
  return { terms: { interval, weRefresh: refresher === 'uas' }, headers };
}

/** RFC 4028 §7.2: the UAC side, from the 2xx to our INVITE/refresh. Undefined: no session timer. */
export function termsFromUacResponse(header: HeaderReader): SessionTerms | undefined {
  const se = parseSessionExpires(header('session-expires') ?? header('x'));
  if (!se || se.interval <= 0) return undefined;
  // A 2xx without a refresher leaves it to us (the UAC), RFC 4028 §7.2.
  return { interval: Math.min(se.interval, MAX_SESSION_EXPIRES_SEC), weRefresh: se.refresher !== 'uas' };
}

/** How long before expiry the side that does not refresh sends BYE (RFC 4028 §10). */
export const byeMarginSec = (interval: number) => Math.min(32, interval / 3);

export interface SessionTimerOptions {
  log: Logger;
  /**
   * Send a refresh (UPDATE or re-INVITE) offering `interval` with us as refresher; resolves with
   * the 2xx's Session-Expires value, rejects when refused or unanswered.
   */
  refresh?: (interval: number) => Promise<string | undefined>;
  /** The session is dead (not refreshed in time, or our refresh failed): end the call. */
  expired: (detail: string) => void;
}

/**
 * One dialog's session timer. We refresh at half the interval when we are the refresher; otherwise
 * a refresh must arrive before the interval minus min(32 s, interval/3) or we hang up. Every
 * refresh, either way, restarts the clock with the terms it agreed.
 */
export class SessionTimer {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private terms: SessionTerms,
    private readonly opts: SessionTimerOptions,
  ) {
    this.arm();
  }

  get current(): SessionTerms {
    return this.terms;
  }

  /** A refresh happened (theirs answered, or ours accepted) with these terms. */
  restart(terms: SessionTerms = this.terms): void {
    if (this.stopped) return;
    this.terms = terms.weRefresh && !this.opts.refresh ? { ...terms, weRefresh: false } : terms;
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private arm(): void {
    clearTimeout(this.timer);
    const { interval, weRefresh } = this.terms;
    if (weRefresh && this.opts.refresh) {
      this.timer = setTimeout(() => void this.sendRefresh(), (interval * 1000) / 2);
    } else {
      this.timer = setTimeout(
        () => {
          this.opts.log.warn({ intervalSec: interval }, 'session expired without refresh');
          this.stopped = true;
          this.opts.expired(`no session refresh within ${interval} s`);
        },
        (interval - byeMarginSec(interval)) * 1000,
      );
    }
  }

  private async sendRefresh(): Promise<void> {
    const interval = this.terms.interval;
    try {
      const se = await this.opts.refresh!(interval);
      if (this.stopped) return;
      this.opts.log.debug({ intervalSec: interval }, 'session refreshed');
      // Our refresh is a new negotiation: the 2xx's Session-Expires is what now holds.
      this.restart(termsFromUacResponse((n) => (n === 'session-expires' ? se : undefined)) ?? this.terms);
    } catch (err) {
      if (this.stopped) return;
      this.stopped = true;
      this.opts.log.warn({ err: (err as Error).message }, 'session refresh failed');
      this.opts.expired(`session refresh failed: ${(err as Error).message}`);
    }
  }
}
