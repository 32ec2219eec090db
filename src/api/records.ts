import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { CallView } from './call-view.js';

export interface RecordQuery {
  front?: string;
  trunk?: string;
  limit?: number;
}

/**
 * Call records: one JSON document per ended call in SQLite (better-sqlite3, synchronous, so a
 * record is on disk before the call's 'ended' handler returns — a SIGTERM right after loses nothing).
 */
export class CallRecordStore {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement;

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS call_records (
      id TEXT PRIMARY KEY, ended_at INTEGER NOT NULL, front TEXT NOT NULL, trunk TEXT, record TEXT NOT NULL)`);
    this.db.exec('CREATE INDEX IF NOT EXISTS call_records_ended ON call_records (ended_at)');
    this.insert = this.db.prepare(
      'INSERT OR REPLACE INTO call_records (id, ended_at, front, trunk, record) VALUES (?, ?, ?, ?, ?)',
    );
  }

  append(view: CallView): void {
    this.insert.run(view.id, view.times.ended ?? Date.now(), view.front, view.trunk, JSON.stringify(view));
  }

  get(id: string): CallView | undefined {
    const row = this.db.prepare('SELECT record FROM call_records WHERE id = ?').get(id) as
      { record: string } | undefined;
    return row ? (JSON.parse(row.record) as CallView) : undefined;
  }

  list(q: RecordQuery = {}): CallView[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.front) {
      where.push('front = ?');
      args.push(q.front);
    }
    if (q.trunk) {
      where.push('trunk = ?');
      args.push(q.trunk);
    }
    const sql = `SELECT record FROM call_records ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ended_at DESC LIMIT ?`;
    const rows = this.db.prepare(sql).all(...args, q.limit ?? 100) as { record: string }[];
    return rows.map((r) => JSON.parse(r.record) as CallView);
  }

  close(): void {
    this.db.close();
  }
}
