import { describe, expect, it } from 'vitest';
import { callView } from '../../src/api/call-view.js';
import { CallRecordStore } from '../../src/api/records.js';
import { Call } from '../../src/core/call.js';
import { testLogger } from '../../src/core/logger.js';

async function ended(n: number, from: string, route: string, cause: string) {
  const call = new Call({ front: 'sip', from, to: '+250700000000', trunk: 'mtn' }, testLogger(), `call-${n}`);
  call.route = route;
  await call.end({ by: 'remote', cause });
  const view = callView(call);
  view.times.ended = 1_700_000_000_000 + n * 1000;
  return view;
}

describe('call history search (SQLite records)', () => {
  it('filters by number part, route, outcome and date; paginates newest first; wildcards are literal', async () => {
    const store = new CallRecordStore(':memory:');
    for (let i = 0; i < 30; i++)
      store.append(
        await ended(
          i,
          i % 3 === 0 ? '+250788111222' : '+250788999000',
          i % 2 ? 'sales' : 'local',
          i < 5 ? 'cancel' : 'bye',
        ),
      );
    store.flush();
    expect(store.list({ number: '111222', limit: 100 }).map((v) => v.id)).toHaveLength(10);
    expect(store.list({ number: '111222', route: 'local', limit: 100 }).every((v) => v.route === 'local')).toBe(true);
    expect(store.list({ outcome: 'cancel' }).map((v) => v.id)).toEqual([
      'call-4',
      'call-3',
      'call-2',
      'call-1',
      'call-0',
    ]);
    const t0 = 1_700_000_000_000;
    expect(store.list({ since: t0 + 10_000, until: t0 + 13_000 }).map((v) => v.id)).toEqual([
      'call-12',
      'call-11',
      'call-10',
    ]);
    // Pages of 10, newest first, no overlap and nothing missed.
    const pages = [0, 10, 20, 30].map((offset) => store.list({ limit: 10, offset }).map((v) => v.id));
    expect(pages[0]![0]).toBe('call-29');
    expect(pages[3]).toEqual([]);
    expect(new Set(pages.flat()).size).toBe(30);
    // A stranger's wildcard is a literal character, not "match everything".
    expect(store.list({ number: '%' })).toEqual([]);
    expect(store.list({ number: '_' })).toEqual([]);
    store.close();
  });

  it('records still queued (database busy) are found and lead page one', async () => {
    const store = new CallRecordStore(':memory:');
    store.append(await ended(1, '+250788111222', 'local', 'bye'));
    store.flush();
    store.append(await ended(2, '+250788111222', 'local', 'bye')); // queued, not yet written
    expect(store.list({ number: '111222' }).map((v) => v.id)).toEqual(['call-2', 'call-1']);
    expect(store.list({ number: '111222', offset: 1 }).map((v) => v.id)).toEqual(['call-1']);
    store.close();
  });
});
