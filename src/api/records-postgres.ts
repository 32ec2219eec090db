import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { Logger } from '../core/logger.js';
import type { CallView } from './call-view.js';
import type { RecordQuery, RecordStore } from './record-store.js';
import { WriteBehindQueue } from './write-behind.js';

export interface PostgresRecordOptions {
  url: string;
  /** Written into each row: which instance ended the call. */
  instanceId: string;
  log: Logger;
  onLost?: (n: number) => void;
  /** Attempts per record before it is counted lost (backoff doubles up to 30 s: about 13 min of outage). */
  maxAttempts?: number;
  retryDelayMs?: number;
  /** Records waiting at most; beyond it the oldest is lost (counted). */
  maxQueued?: number;
  /** One statement's deadline, and the wait for a connection. */
  statementTimeoutMs?: number;
  /** Where the numbered *.sql migrations live. */
  migrationsDir?: string;
}

const MIGRATIONS = join(import.meta.dirname, '../../migrations/postgres');
/** pg_advisory_lock key: instances starting together apply migrations one at a time. */
const MIGRATION_LOCK = 7_140_014;
const BATCH = 200;

/**
 * Call records in PostgreSQL, shared by every instance (node-postgres pool). The schema is the
 * numbered SQL files in migrations/postgres, applied once each under an advisory lock and recorded in
 * schema_migrations. Writes: queued, one multi-row INSERT per batch with ON CONFLICT (id) DO NOTHING,
 * so a batch retried after an unknown outcome (connection lost mid-commit) never writes a record twice.
 */
export class PostgresRecordStore implements RecordStore {
  private readonly pool: pg.Pool;
  private readonly queue: WriteBehindQueue;
  /** Schema applied by this process (done at start, or before the first write once the database is up). */
  private migrated = false;
  private readonly opts: Required<Omit<PostgresRecordOptions, 'onLost'>> & Pick<PostgresRecordOptions, 'onLost'>;

  constructor(opts: PostgresRecordOptions) {
    this.opts = {
      maxAttempts: 30,
      retryDelayMs: 250,
      maxQueued: 10_000,
      statementTimeoutMs: 5000,
      migrationsDir: MIGRATIONS,
      ...opts,
    };
    this.queue = new WriteBehindQueue((views) => this.insert(views), {
      ...this.opts,
      batchSize: BATCH,
      store: 'PostgreSQL',
    });
    this.pool = new pg.Pool({
      connectionString: opts.url,
      max: 4,
      connectionTimeoutMillis: this.opts.statementTimeoutMs,
      statement_timeout: this.opts.statementTimeoutMs,
      query_timeout: this.opts.statementTimeoutMs,
    });
    // An idle client losing its connection (database restart) must not crash the process.
    this.pool.on('error', (err) => opts.log.warn({ err: err.message }, 'PostgreSQL connection lost'));
  }

  /** Apply pending migrations. The gateway starts without the database (records queue until it is back). */
  async migrate(): Promise<string[]> {
    const client = await this.pool.connect();
    const applied: string[] = [];
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      await client.query(
        'CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())',
      );
      const done = new Set(
        (await client.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((r) => r.name),
      );
      for (const name of readdirSync(this.opts.migrationsDir)
        .filter((f) => f.endsWith('.sql'))
        .sort()) {
        if (done.has(name)) continue;
        await client.query('BEGIN');
        try {
          await client.query(readFileSync(join(this.opts.migrationsDir, name), 'utf8'));
          await client.query('INSERT INTO schema_migrations (name) VALUES ($1)', [name]);
          await client.query('COMMIT');
          applied.push(name);
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
      client.release();
    }
    this.migrated = true;
    if (applied.length) this.opts.log.info({ applied }, 'PostgreSQL record migrations applied');
    return applied;
  }

  /** Records given up on since start. */
  get lost(): number {
    return this.queue.lost;
  }

  get pending(): number {
    return this.queue.pending;
  }

  append(view: CallView): void {
    this.queue.push(view);
  }

  /**
   * One multi-row INSERT. ON CONFLICT (id) DO NOTHING: a batch retried after an unknown outcome
   * (connection lost mid-commit) never writes a record twice.
   */
  private async insert(views: CallView[]): Promise<void> {
    if (!this.migrated) await this.migrate();
    const values: unknown[] = [];
    const rows = views.map((v, i) => {
      values.push(v.id, new Date(v.times.ended ?? Date.now()), v.front, v.trunk ?? null, this.opts.instanceId, v);
      const o = i * 6;
      return `($${o + 1}, $${o + 2}, $${o + 3}, $${o + 4}, $${o + 5}, $${o + 6})`;
    });
    await this.pool.query(
      `INSERT INTO call_records (id, ended_at, front, trunk, instance, record) VALUES ${rows.join(', ')}
       ON CONFLICT (id) DO NOTHING`,
      values,
    );
  }

  async get(id: string): Promise<CallView | undefined> {
    const queued = this.queue.find(id);
    if (queued) return queued;
    const r = await this.pool.query<{ record: CallView }>('SELECT record FROM call_records WHERE id = $1', [id]);
    return r.rows[0]?.record;
  }

  /** Every instance's records (plus this one's still queued), newest first, filtered like SQLite's. */
  async list(q: RecordQuery = {}): Promise<CallView[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.front) where.push(`front = $${args.push(q.front)}`);
    if (q.trunk) where.push(`trunk = $${args.push(q.trunk)}`);
    if (q.route) where.push(`record->>'route' = $${args.push(q.route)}`);
    if (q.outcome) where.push(`record->'endReason'->>'cause' = $${args.push(q.outcome)}`);
    if (q.number) {
      const n = args.push(`%${q.number.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
      where.push(`(record->>'from' LIKE $${n} OR record->>'to' LIKE $${n})`);
    }
    if (q.since !== undefined) where.push(`ended_at >= to_timestamp($${args.push(q.since / 1000)})`);
    if (q.until !== undefined) where.push(`ended_at < to_timestamp($${args.push(q.until / 1000)})`);
    const limit = q.limit ?? 100;
    const offset = q.offset ?? 0;
    const queued = this.queue.matching(q);
    // Queued records sort before stored ones only by their end time, so read enough stored rows to
    // cover the page whatever the merge order; queued ids win over a stored copy of the same call.
    const sql = `SELECT record FROM call_records ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY ended_at DESC LIMIT $${args.push(limit + offset + queued.length)}`;
    const stored = (await this.pool.query<{ record: CallView }>(sql, args)).rows.map((r) => r.record);
    const ids = new Set(queued.map((v) => v.id));
    return [...queued, ...stored.filter((v) => !ids.has(v.id))]
      .sort((a, b) => (b.times.ended ?? 0) - (a.times.ended ?? 0))
      .slice(offset, offset + limit);
  }

  /** One last bounded attempt at what is queued, then close the pool; the rest is counted lost. */
  async close(): Promise<void> {
    await this.queue.close();
    await this.pool.end();
  }
}
