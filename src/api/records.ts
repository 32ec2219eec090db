import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Logger } from '../core/logger.js';
import type { CallView } from './call-view.js';
import type { RecordQuery, RecordStore } from './record-store.js';
import { WriteBehindQueue } from './write-behind.js';

export interface RecordStoreOptions {
  /**
   * How long one write may wait for a lock held by another process (SQLITE_BUSY) before failing and
   * being retried later. better-sqlite3 waits synchronously, so this is kept to about one media
   * tick (default 25 ms), never the driver's 5 s.
   */
  busyTimeoutMs?: number;
  /** Attempts per record before it is counted as lost. */
  maxAttempts?: number;
  /** Delay between attempts (doubles each time). */
  retryDelayMs?: number;
  /** Records waiting at most; beyond it the oldest is lost (counted). */
  maxQueued?: number;
  log?: Logger;
  /** Called once per record given up on (metrics). */
  onLost?: (n: number) => void;
}

/**
 * Call records: one JSON document per ended call in SQLite. Writes never happen on the call's own
 * path: `append` queues and returns; a batch is written on the next turn of the event loop in one
 * transaction with a short busy timeout. A failed batch (locked DB, SQLITE_FULL, I/O error) is
 * retried with backoff and counted as lost only after the last attempt. Reads see queued records
 * too, so a record is visible the moment its call has ended. `flush()` writes what is queued
 * (shutdown, fatal error).
 */
export class CallRecordStore implements RecordStore {
  private readonly db: Database.Database;
  private readonly queue: WriteBehindQueue;
  readonly opts: Required<Omit<RecordStoreOptions, 'log' | 'onLost'>> & Pick<RecordStoreOptions, 'log' | 'onLost'>;

  constructor(path: string, opts: RecordStoreOptions = {}) {
    this.opts = { busyTimeoutMs: 25, maxAttempts: 8, retryDelayMs: 250, maxQueued: 10_000, ...opts };
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { timeout: this.opts.busyTimeoutMs });
    this.db.pragma('journal_mode = WAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS call_records (
      id TEXT PRIMARY KEY, ended_at INTEGER NOT NULL, front TEXT NOT NULL, trunk TEXT, record TEXT NOT NULL)`);
    this.db.exec('CREATE INDEX IF NOT EXISTS call_records_ended ON call_records (ended_at)');
    const insert = this.db.prepare(
      'INSERT OR REPLACE INTO call_records (id, ended_at, front, trunk, record) VALUES (?, ?, ?, ?, ?)',
    );
    const insertMany = this.db.transaction((views: CallView[]) => {
      for (const v of views) insert.run(v.id, v.times.ended ?? Date.now(), v.front, v.trunk, JSON.stringify(v));
    });
    this.queue = new WriteBehindQueue(insertMany, { ...this.opts, batchSize: Infinity, store: 'SQLite' });
  }

  /** Records given up on since start. */
  get lost(): number {
    return this.queue.lost;
  }

  /** Batch writes that failed since start (disk full, locked, I/O error), each retried. */
  get failedWrites(): number {
    return this.queue.failedWrites;
  }

  /** Raw access for tests and maintenance (e.g. simulating a full disk with max_page_count). */
  get database(): Database.Database {
    return this.db;
  }

  get pending(): number {
    return this.queue.pending;
  }

  append(view: CallView): void {
    this.queue.push(view);
  }

  /** Write what is queued now (one attempt); what still fails stays queued for a retry. */
  flush(): boolean {
    return this.queue.drain() as boolean;
  }

  get(id: string): CallView | undefined {
    const queued = this.queue.find(id);
    if (queued) return queued;
    const row = this.db.prepare('SELECT record FROM call_records WHERE id = ?').get(id) as
      { record: string } | undefined;
    return row ? (JSON.parse(row.record) as CallView) : undefined;
  }

  list(q: RecordQuery = {}): CallView[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    const add = (sql: string, ...values: (string | number)[]) => {
      where.push(sql);
      args.push(...values);
    };
    if (q.front) add('front = ?', q.front);
    if (q.trunk) add('trunk = ?', q.trunk);
    if (q.number) {
      const like = `%${q.number.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      add(
        "(json_extract(record, '$.from') LIKE ? ESCAPE '\\' OR json_extract(record, '$.to') LIKE ? ESCAPE '\\')",
        like,
        like,
      );
    }
    if (q.route) add("json_extract(record, '$.route') = ?", q.route);
    if (q.outcome) add("json_extract(record, '$.endReason.cause') = ?", q.outcome);
    if (q.since !== undefined) add('ended_at >= ?', q.since);
    if (q.until !== undefined) add('ended_at < ?', q.until);
    const limit = q.limit ?? 100;
    const offset = q.offset ?? 0;
    // Records still queued (disk busy) are newer than any stored one: they lead page one.
    const queued = this.queue.matching(q);
    const ids = new Set(queued.map((v) => v.id));
    const sql = `SELECT record FROM call_records ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ended_at DESC LIMIT ? OFFSET ?`;
    const rows = this.db.prepare(sql).all(...args, limit + queued.length, Math.max(0, offset - queued.length)) as {
      record: string;
    }[];
    const stored = rows.map((r) => JSON.parse(r.record) as CallView).filter((v) => !ids.has(v.id));
    const page = offset < queued.length ? [...queued.slice(offset), ...stored] : stored;
    return page.sort((a, b) => (b.times.ended ?? 0) - (a.times.ended ?? 0)).slice(0, limit);
  }

  /** Flush, then close. Records that still cannot be written are counted lost. */
  close(): void {
    this.queue.closeSync();
    this.db.close();
  }
}
