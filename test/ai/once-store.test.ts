import { describe, expect, it } from 'vitest';
import { MemoryOnceStore } from '../../src/ai/openai-sip/once-store.js';
import { sleep } from '../support/gateway.js';

describe('MemoryOnceStore (webhook / call de-duplication)', () => {
  it('claims a key once within its TTL, and again after it expires', async () => {
    const store = new MemoryOnceStore();
    expect(await store.claim('wh_1', 100)).toBe(true);
    expect(await store.claim('wh_1', 100)).toBe(false);
    expect(await store.claim('wh_2', 100)).toBe(true);
    await sleep(150);
    expect(await store.claim('wh_1', 100)).toBe(true);
    expect(store.size).toBe(1); // wh_2 expired and was dropped on the way
  });

  it('a flood of distinct ids cannot grow it past its bound (the oldest are forgotten first)', async () => {
    const store = new MemoryOnceStore(1000);
    for (let i = 0; i < 20_000; i++) await store.claim(`flood_${i}`, 60_000);
    expect(store.size).toBeLessThanOrEqual(1001);
    expect(await store.claim('flood_19999', 60_000)).toBe(false); // recent ones are still known
    expect(await store.claim('flood_0', 60_000)).toBe(true); // the oldest were dropped
  });
});
