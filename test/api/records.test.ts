import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { callView } from '../../src/api/call-view.js';
import { CallRecordStore } from '../../src/api/records.js';
import { Call } from '../../src/core/call.js';
import { testLogger } from '../../src/core/logger.js';
import type { Gateway } from '../../src/gateway.js';
import { simulatedCall, startTestGateway, TEST_TOKEN, waitFor } from '../support/gateway.js';

let gw: Gateway | undefined;
afterEach(async () => {
  await gw?.stop('test_done', 0);
  gw = undefined;
});

const tmpDb = () => join(mkdtempSync(join(tmpdir(), 'gw-records-')), 'calls.sqlite');
/** SQLITE_FULL for real: cap the database at the pages it has, then fill the free space in them. */
function fillUp(db: Database.Database): void {
  db.pragma(`max_page_count = ${(db.pragma('page_count', { simple: true }) as number) + 2}`);
  const junk = db.prepare("INSERT INTO call_records (id, ended_at, front, trunk, record) VALUES (?, 0, 'x', NULL, ?)");
  try {
    for (let i = 0; i < 100_000; i++) junk.run(`junk-${i}`, 'j'.repeat(i % 2 ? 40 : 400));
  } catch (err) {
    expect((err as { code?: string }).code).toBe('SQLITE_FULL');
  }
}

async function endedView(id: string) {
  const call = new Call({ front: 'test', from: 'a', to: 'b' }, testLogger(), id);
  await call.end({ by: 'remote', cause: 'bye' });
  return callView(call);
}

describe('call records off the media path', () => {
  it('a full database (SQLITE_FULL) never fails the call: the record waits, is served, and is written once space returns', async () => {
    const path = tmpDb();
    gw = await startTestGateway({ records: { path } });
    const db = gw.ctx.records.database;
    fillUp(db);
    const { call } = await simulatedCall(gw);
    await call.end({ by: 'remote', cause: 'bye' });
    expect(call.endReason).toMatchObject({ cause: 'bye' });
    await waitFor(() => gw!.ctx.records.pending === 1, 2000, 'queued');
    // A failed attempt has happened (waited for, not assumed after a sleep), the record is still
    // pending, and the API serves it already.
    const store = gw.ctx.records as CallRecordStore;
    await waitFor(() => store.failedWrites >= 1, 5000, 'a failed write attempt');
    expect(gw.ctx.records.pending).toBe(1);
    const res = await fetch(`http://127.0.0.1:${gw.httpPort}/v1/calls/${call.id}`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(((await res.json()) as { endReason: { cause: string } }).endReason.cause).toBe('bye');
    // Space comes back: the retry writes it.
    db.pragma('max_page_count = 1073741823');
    await waitFor(() => gw!.ctx.records.pending === 0, 10_000, 'written on retry');
    const other = new Database(path, { readonly: true });
    const rows = other.prepare('SELECT id FROM call_records').all() as { id: string }[];
    other.close();
    expect(rows.map((r) => r.id).filter((id) => !id.startsWith('junk-'))).toEqual([call.id]);
    expect((await gw.ctx.metrics.recordsLost.get()).values[0]?.value ?? 0).toBe(0);
  });

  it('after the last attempt a record is counted lost (metric), never thrown at the call', async () => {
    const lost: number[] = [];
    const store = new CallRecordStore(tmpDb(), { maxAttempts: 3, retryDelayMs: 10, onLost: (n) => lost.push(n) });
    fillUp(store.database);
    store.append(await endedView('r1'));
    store.append(await endedView('r2'));
    await waitFor(() => store.lost === 2, 5000, 'given up');
    expect(lost).toEqual([1, 1]);
    expect(store.pending).toBe(0);
    store.close();
  });

  it('a database locked by another process costs one short bounded wait, not 5 s, and is retried', async () => {
    const path = tmpDb();
    const store = new CallRecordStore(path, { retryDelayMs: 20 });
    const locker = new Database(path);
    locker.exec('BEGIN EXCLUSIVE');
    const view = await endedView('locked');
    const t0 = performance.now();
    store.append(view);
    expect(store.flush()).toBe(false); // one attempt: SQLITE_BUSY after the busy timeout
    const blockedMs = performance.now() - t0;
    expect(blockedMs).toBeLessThan(1000);
    expect(store.get('locked')?.id).toBe('locked');
    locker.exec('COMMIT');
    locker.close();
    await waitFor(() => store.pending === 0, 5000, 'written after unlock');
    expect(store.list().map((v) => v.id)).toEqual(['locked']);
    expect(store.pending).toBe(0);
    store.close();
  });
});
