import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisClusterState } from '../../src/cluster/redis-state.js';
import { InProcessClusterState, type ClusterState } from '../../src/core/cluster-state.js';
import { testLogger } from '../../src/core/logger.js';
import { haveRedis, startRedis, type RedisServer } from '../peers/redis/server.js';

const redisMissing = !haveRedis();
if (redisMissing)
  console.warn('SKIPPED Redis ClusterState tests: redis-server is not installed (apt-get install redis-server)');

let redis: RedisServer | undefined;
let prefixSeq = 0;
const opened: RedisClusterState[] = [];

beforeAll(async () => {
  if (!redisMissing) redis = await startRedis();
});
afterAll(async () => {
  await Promise.all(opened.map((s) => s.stop()));
  await redis?.stop();
});

function redisState(id: string, prefix: string, ttlMs = 60_000, heartbeatMs = 1000): RedisClusterState {
  const s = new RedisClusterState({
    url: redis!.url,
    instanceId: id,
    advertiseUrl: `http://${id}.test`,
    keyPrefix: prefix,
    heartbeatMs,
    ttlMs,
    commandTimeoutMs: 2000,
    log: testLogger(),
  });
  opened.push(s);
  return s;
}

/** Two instances' views of one cluster (the in-process one is one instance seen twice). */
type Pair = () => Promise<[ClusterState, ClusterState]>;
const impls: [string, Pair, boolean][] = [
  [
    'in-process',
    () => {
      const s = new InProcessClusterState('solo', 'http://solo.test');
      return Promise.resolve([s, s]);
    },
    false,
  ],
  [
    'redis',
    async () => {
      const prefix = `t${++prefixSeq}:`;
      const a = redisState('gw-a', prefix);
      const b = redisState('gw-b', prefix);
      await Promise.all([a.start(), b.start()]);
      return [a, b];
    },
    redisMissing,
  ],
];

describe.each(impls)('ClusterState contract: %s', (_name, pair, skip) => {
  it.skipIf(skip)('admits up to max across instances, refuses with the full key, frees on release', async () => {
    const [a, b] = await pair();
    const slots = (n: number) => [
      { key: 'trunk:mtn', max: 3 },
      { key: 'front:sip', max: n },
    ];
    expect(await a.admit('c1', slots(10))).toBeUndefined();
    expect(await b.admit('c2', slots(10))).toBeUndefined();
    expect(await a.admit('c3', slots(10))).toBeUndefined();
    expect(await b.admit('c4', slots(10))).toBe('trunk:mtn');
    // All or nothing: the refused call took no slot in front:sip either.
    expect(await a.count('front:sip')).toBe(3);
    expect(await b.count('trunk:mtn')).toBe(3);
    // A different cap is the one that refuses when it is the full one.
    expect(await b.admit('c5', [{ key: 'front:sip', max: 3 }])).toBe('front:sip');
    await a.release('c1');
    await a.release('c1'); // idempotent
    expect(await b.count('trunk:mtn')).toBe(2);
    expect(await b.admit('c4', slots(10))).toBeUndefined();
    expect((await a.ownerOf('c4'))?.instanceId).toBe(b.instanceId);
    expect(await a.ownerOf('c1')).toBeUndefined();
  });

  it.skipIf(skip)('aliases name the call and its owner until it ends', async () => {
    const [a, b] = await pair();
    await b.admit('call-1', [{ key: 'front:whatsapp', max: 5 }]);
    await b.alias('whatsapp', 'wacid.ABC', 'call-1');
    expect(await a.resolve('whatsapp', 'wacid.ABC')).toEqual({ callId: 'call-1', instanceId: b.instanceId });
    expect(await a.resolve('sip', 'wacid.ABC')).toBeUndefined();
    await b.release('call-1');
    expect(await a.resolve('whatsapp', 'wacid.ABC')).toBeUndefined();
  });

  it.skipIf(skip)('claim is true exactly once per key across instances, again after its ttl', async () => {
    const [a, b] = await pair();
    const results = await Promise.all([a.claim('wh:1', 200), b.claim('wh:1', 200), a.claim('wh:1', 200)]);
    expect(results.filter(Boolean)).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(await b.claim('wh:1', 200)).toBe(true);
  });

  it.skipIf(skip)('lists instances with their drain state and call counts', async () => {
    const [a, b] = await pair();
    await a.admit('x1', []);
    await b.setDraining(true);
    const list = await a.instances();
    const me = list.find((i) => i.id === b.instanceId)!;
    expect(me.draining).toBe(true);
    expect(list.find((i) => i.id === a.instanceId)?.url).toMatch(/^http:\/\//);
  });
});

describe.skipIf(redisMissing)('Redis ClusterState under contention and failure', () => {
  it('60 concurrent admissions from two instances for 25 slots: exactly 25 admitted', async () => {
    const prefix = `race${++prefixSeq}:`;
    const a = redisState('ra', prefix);
    const b = redisState('rb', prefix);
    await Promise.all([a.start(), b.start()]);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).admit(`call-${i}`, [{ key: 'trunk:t', max: 25 }])),
    );
    expect(results.filter((r) => r === undefined)).toHaveLength(25);
    expect(results.filter((r) => r === 'trunk:t')).toHaveLength(35);
    expect(await a.count('trunk:t')).toBe(25);
  });

  it("a dead instance's calls and aliases expire within the ttl; the live one's survive by heartbeat", async () => {
    const prefix = `dead${++prefixSeq}:`;
    const dead = redisState('dead', prefix, 1500, 300);
    const live = redisState('live', prefix, 1500, 300);
    await Promise.all([dead.start(), live.start()]);
    await dead.admit('d1', [{ key: 'trunk:t', max: 10 }]);
    await dead.alias('sip', 'sip-call-d1', 'd1');
    await live.admit('l1', [{ key: 'trunk:t', max: 10 }]);
    expect(await live.count('trunk:t')).toBe(2);
    // "SIGKILL": the dead instance stops heartbeating without releasing anything.
    const raw = dead as unknown as { timer: NodeJS.Timeout };
    clearInterval(raw.timer);
    const t0 = Date.now();
    while ((await live.count('trunk:t')) !== 1) {
      expect(Date.now() - t0).toBeLessThan(5000);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await live.resolve('sip', 'sip-call-d1')).toBeUndefined();
    expect(await live.ownerOf('d1')).toBeUndefined();
    // Two ttls later the live call is still counted and owned: heartbeats keep it.
    await new Promise((r) => setTimeout(r, 3000));
    expect(await live.count('trunk:t')).toBe(1);
    expect((await dead.ownerOf('l1'))?.instanceId).toBe('live');
    expect((await live.instances()).map((i) => i.id)).toEqual(['live']);
  });

  it('re-asserts its calls after Redis lost them (FLUSHALL, failover to an empty replica)', async () => {
    const prefix = `flush${++prefixSeq}:`;
    const a = redisState('fa', prefix, 5000, 200);
    await a.start();
    await a.admit('f1', [{ key: 'trunk:t', max: 10 }]);
    await a.alias('whatsapp', 'wa-f1', 'f1');
    await a.client.flushall();
    expect(await a.count('trunk:t')).toBe(0);
    const t0 = Date.now();
    while ((await a.count('trunk:t')) !== 1) {
      expect(Date.now() - t0).toBeLessThan(3000);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await a.resolve('whatsapp', 'wa-f1')).toEqual({ callId: 'f1', instanceId: 'fa' });
  });

  it('admission fails fast (rejects) when Redis is unreachable instead of hanging a call set-up', async () => {
    const s = new RedisClusterState({
      url: 'redis://127.0.0.1:1',
      instanceId: 'nowhere',
      advertiseUrl: undefined,
      keyPrefix: 'x:',
      heartbeatMs: 1000,
      ttlMs: 3000,
      commandTimeoutMs: 300,
      log: testLogger(),
    });
    await expect(s.start()).rejects.toThrow();
    await expect(s.admit('c', [{ key: 'k', max: 1 }])).rejects.toThrow();
    await s.stop();
  });
});
