import { describe, expect, it } from 'vitest';
import type { CallView } from '../../src/api/call-view.js';
import { WriteBehindQueue } from '../../src/api/write-behind.js';
import { waitFor } from '../support/gateway.js';

const view = (id: string, ended: number) => ({ id, front: 'sip', from: '+1', to: '+2', times: { ended } }) as CallView;

describe('WriteBehindQueue (the one queue under SQLite and PostgreSQL records)', () => {
  it('an async batch in flight while the queue overflows: the oldest record not being written is the one lost; nothing is written twice', async () => {
    const written: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const q = new WriteBehindQueue(
      async (views) => {
        await gate;
        written.push(...views.map((v) => v.id));
      },
      { maxAttempts: 3, retryDelayMs: 10, maxQueued: 3, batchSize: 2, store: 'test' },
    );
    q.push(view('a', 1));
    q.push(view('b', 2));
    await new Promise((r) => setTimeout(r, 5)); // the first batch [a, b] is now in flight
    q.push(view('c', 3));
    q.push(view('d', 4)); // 4 queued > 3: a and b are being written, so c is given up on
    expect(q.lost).toBe(1);
    expect(q.find('c')).toBeUndefined();
    expect(q.matching({}).map((v) => v.id)).toEqual(['d', 'b', 'a']);
    release();
    await waitFor(() => q.pending === 0, 5000, 'queue drained');
    expect(written).toEqual(['a', 'b', 'd']);
    await q.close();
    expect(q.lost).toBe(1);
  });

  it('a failing writer: retried with backoff, then each record counted lost exactly once; close gives up the rest', async () => {
    let attempts = 0;
    const lostIds: number[] = [];
    const q = new WriteBehindQueue(
      () => {
        attempts++;
        throw Object.assign(new Error('disk full'), { code: 'SQLITE_FULL' });
      },
      {
        maxAttempts: 2,
        retryDelayMs: 5,
        maxQueued: 100,
        batchSize: Infinity,
        store: 'test',
        onLost: (n) => lostIds.push(n),
      },
    );
    q.push(view('x', 1));
    expect(q.drain()).toBe(false); // synchronous writer: synchronous answer
    await waitFor(() => q.lost === 1, 5000, 'given up after two attempts');
    expect(attempts).toBe(2);
    expect(q.failedWrites).toBe(2);
    q.push(view('y', 2));
    q.closeSync();
    expect(q.lost).toBe(2);
    expect(lostIds).toEqual([1, 1]);
    expect(q.pending).toBe(0);
  });
});
