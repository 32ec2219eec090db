import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallView } from '../../src/api/call-view.js';
import { PostgresRecordStore } from '../../src/api/records-postgres.js';
import { testLogger } from '../../src/core/logger.js';
import type { Gateway } from '../../src/gateway.js';
import { api, simulatedCall, startTestGateway, waitFor } from '../support/gateway.js';
import { postgresMissing, startPostgres, type PostgresServer } from '../peers/postgres/server.js';

const missing = postgresMissing();
if (missing) console.warn(`SKIPPED PostgreSQL record store tests: ${missing}`);

let db: PostgresServer | undefined;
const stores: PostgresRecordStore[] = [];
beforeAll(async () => {
  if (!missing) db = await startPostgres();
}, 90_000);
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
  db?.destroy();
});

const store = (instanceId: string, extra: Partial<ConstructorParameters<typeof PostgresRecordStore>[0]> = {}) => {
  const s = new PostgresRecordStore({ url: db!.url, instanceId, log: testLogger(), retryDelayMs: 50, ...extra });
  stores.push(s);
  return s;
};

const view = (id: string, endedAt: number, front = 'sip'): CallView =>
  ({ id, front, trunk: 'mtn-rwanda', times: { created: endedAt - 1000, ended: endedAt } }) as unknown as CallView;

async function rows(): Promise<number> {
  const c = new pg.Client({ connectionString: db!.url });
  await c.connect();
  try {
    return Number((await c.query('SELECT count(*) AS n FROM call_records')).rows[0].n);
  } finally {
    await c.end();
  }
}

describe.skipIf(!!missing)('PostgreSQL record store (real postgres started by the test)', () => {
  it('two instances migrate at once (advisory lock): the schema is applied exactly once', async () => {
    const [a, b] = [store('gw-a'), store('gw-b')];
    const applied = await Promise.all([a.migrate(), b.migrate()]);
    expect(applied.flat()).toEqual(['001_call_records.sql']);
  });

  it("calls ended on two gateways appear in one history, newest first, on either gateway's API", async () => {
    const gws: Gateway[] = [];
    try {
      for (const id of ['gw-a', 'gw-b'])
        gws.push(
          await startTestGateway({
            cluster: { instanceId: id },
            records: { path: ':memory:', postgres: { url: db!.url } },
          }),
        );
      const ended: string[] = [];
      for (const gw of [gws[0]!, gws[1]!, gws[0]!]) {
        const { call } = await simulatedCall(gw);
        await call.end({ by: 'operator', cause: 'test' });
        ended.unshift(call.id);
      }
      await waitFor(() => gws.every((g) => g.ctx.history.pending === 0), 10_000, 'records written');
      for (const gw of gws) {
        const r = await api(gw)('GET', '/v1/calls?ended=true&front=test');
        expect(r.status).toBe(200);
        expect((r.body as unknown as { calls: { id: string }[] }).calls.map((c) => c.id)).toEqual(ended);
        const one = await api(gw)('GET', `/v1/calls/${ended[1]}`);
        expect((one.body as unknown as { id: string; endReason: unknown }).endReason).toMatchObject({ cause: 'test' });
      }
    } finally {
      await Promise.all(gws.map((g) => g.stop('test_done', 0)));
    }
  });

  it('a database outage: records queue and are written once it is back; a record is never stored twice', async () => {
    const s = store('gw-outage');
    await s.migrate();
    const before = await rows();
    db!.stop();
    const t = Date.now();
    s.append(view('outage-1', t));
    s.append(view('outage-2', t + 1));
    await new Promise((r) => setTimeout(r, 500));
    expect(s.pending).toBe(2);
    // Readable while queued (from the queue) even with the database down.
    expect((await s.get('outage-1'))?.id).toBe('outage-1');
    db!.start();
    await waitFor(() => s.pending === 0, 30_000, 'queue drained after the outage');
    expect(s.lost).toBe(0);
    // The same record delivered again (a retried batch whose commit was in fact done) adds nothing.
    s.append(view('outage-1', t));
    await waitFor(() => s.pending === 0, 10_000, 'duplicate processed');
    expect(await rows()).toBe(before + 2);
  });

  it('records given up on are counted, not silently dropped', async () => {
    const lost: number[] = [];
    const s = store('gw-lost', { maxAttempts: 2, onLost: (n) => lost.push(n) });
    await s.migrate();
    db!.stop();
    try {
      s.append(view('lost-1', Date.now()));
      await waitFor(() => s.pending === 0, 10_000, 'given up');
      expect(lost).toEqual([1]);
      expect(s.lost).toBe(1);
    } finally {
      db!.start();
    }
  });
});
