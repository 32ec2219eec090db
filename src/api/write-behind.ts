import type { Logger } from '../core/logger.js';
import type { CallView } from './call-view.js';
import { recordMatches, type RecordQuery } from './record-store.js';

export interface WriteBehindOptions {
  /** Attempts per record before it is counted lost. */
  maxAttempts: number;
  /** Delay before the first retry; doubles each failure up to 30 s. */
  retryDelayMs: number;
  /** Records waiting at most; beyond it the oldest is lost (counted). */
  maxQueued: number;
  /** Records per write (SQLite writes everything in one transaction; PostgreSQL bounds its INSERT). */
  batchSize: number;
  /** Names the store in logs. */
  store: string;
  log?: Logger;
  /** Called once per record given up on (metrics). */
  onLost?: (n: number) => void;
}

/** Writes one batch: throws (sync stores) or rejects (async stores) when nothing was written. */
export type BatchWriter = (views: CallView[]) => void | Promise<void>;

interface Queued {
  view: CallView;
  attempts: number;
}

/**
 * The queue every record store writes through, so no call waits on a disk or a database: `push`
 * returns at once; batches are written on a later turn of the event loop; a failed batch is retried
 * with doubling backoff and a record is counted lost only after its last attempt (or when the queue
 * overflows, or at close). Queued records stay readable (`find`, `matching`) until written.
 * A synchronous writer (better-sqlite3) makes `drain` synchronous, so shutdown can flush in place.
 */
export class WriteBehindQueue {
  private items: Queued[] = [];
  /** The batch an async writer is writing now: never given up on while its outcome is unknown. */
  private inFlight = new Set<Queued>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  private delayMs: number;
  private closed = false;
  /** Records given up on since start. */
  lost = 0;
  /** Batch writes that failed since start (each is retried until its records' last attempt). */
  failedWrites = 0;

  constructor(
    private readonly write: BatchWriter,
    private readonly opts: WriteBehindOptions,
  ) {
    this.delayMs = opts.retryDelayMs;
  }

  get pending(): number {
    return this.items.length;
  }

  push(view: CallView): void {
    this.items.push({ view, attempts: 0 });
    if (this.items.length > this.opts.maxQueued) {
      const oldest = Math.max(
        0,
        this.items.findIndex((i) => !this.inFlight.has(i)),
      );
      this.giveUp(this.items.splice(oldest, 1)[0]!, 'queue full');
    }
    this.schedule(0);
  }

  /** The newest queued record of a call. */
  find(id: string): CallView | undefined {
    for (let i = this.items.length - 1; i >= 0; i--) if (this.items[i]!.view.id === id) return this.items[i]!.view;
    return undefined;
  }

  /** Queued records matching a history query, newest first. */
  matching(q: RecordQuery): CallView[] {
    return this.items
      .map((x) => x.view)
      .filter((v) => recordMatches(v, q))
      .reverse();
  }

  /**
   * Write batches until the queue is empty (true) or a write fails (false; a retry is scheduled).
   * Synchronous when the writer is.
   */
  drain(): boolean | Promise<boolean> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.items.length) {
      const batch = this.items.slice(0, this.opts.batchSize);
      let written: void | Promise<void>;
      try {
        written = this.write(batch.map((b) => b.view));
      } catch (err) {
        return this.failed(batch, err);
      }
      if (written) {
        this.inFlight = new Set(batch);
        return written
          .finally(() => this.inFlight.clear())
          .then(
            () => (this.succeeded(batch), this.drain()),
            (err: unknown) => this.failed(batch, err),
          );
      }
      this.succeeded(batch);
    }
    return true;
  }

  /** Let a running write finish, make one last attempt, then give up on what is left. */
  async close(): Promise<void> {
    await this.running;
    await this.drain();
    this.closeNow();
  }

  /** The synchronous close of a synchronous store: one attempt, then give up on what is left. */
  closeSync(): void {
    this.drain();
    this.closeNow();
  }

  private closeNow(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const item of this.items.splice(0)) this.giveUp(item, 'store closed');
  }

  private schedule(ms: number): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running ??= Promise.resolve(this.drain()).finally(() => (this.running = undefined));
    }, ms);
  }

  private succeeded(batch: Queued[]): void {
    const done = new Set(batch);
    this.items = this.items.filter((i) => !done.has(i));
    this.delayMs = this.opts.retryDelayMs;
  }

  private failed(batch: Queued[], err: unknown): false {
    const e = err as Error & { code?: string };
    this.failedWrites++;
    for (const b of batch) b.attempts++;
    while (this.items.length && this.items[0]!.attempts >= this.opts.maxAttempts)
      this.giveUp(this.items.shift()!, e.code ?? e.message);
    this.opts.log?.warn(
      { err: e.message, code: e.code, queued: this.items.length, retryInMs: this.delayMs },
      `call records not written to ${this.opts.store}: will retry`,
    );
    if (this.items.length) {
      this.schedule(this.delayMs);
      this.delayMs = Math.min(this.delayMs * 2, 30_000);
    }
    return false;
  }

  private giveUp(item: Queued, why: string): void {
    this.lost++;
    this.opts.onLost?.(1);
    this.opts.log?.error({ callId: item.view.id, why }, 'call record lost');
  }
}
