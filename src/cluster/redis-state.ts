import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type { AliasKind, CallOwner, ClusterState, InstanceInfo, Slot } from '../core/cluster-state.js';
import type { Logger } from '../core/logger.js';

export interface RedisClusterOptions {
  url: string;
  instanceId: string;
  /** This instance's ops base URL, published for the others (REST and webhook forwarding). */
  advertiseUrl: string | undefined;
  keyPrefix: string;
  /** How often this instance refreshes its calls and itself. */
  heartbeatMs: number;
  /** How long a call / an instance outlives its last heartbeat (a SIGKILL'd instance's calls expire). */
  ttlMs: number;
  /** One Redis command's deadline: admission must not hang a call set-up on a dead Redis. */
  commandTimeoutMs: number;
  log: Logger;
}

/*
 * Layout (prefix p):
 *   p:slots:<key>          ZSET callId -> expiry (ms, Redis clock): a counter whose dead entries expire
 *   p:call:<callId>        HASH owner, slots (JSON), aliases (JSON); PEXPIRE ttl
 *   p:alias:<kind>:<ext>   STRING callId; PEXPIRE ttl
 *   p:once:<key>           SET NX PX (webhook de-duplication)
 *   p:inst:<id>            HASH url, draining, calls; PEXPIRE ttl
 *   p:instances            ZSET id -> expiry
 * Scripts build some keys from values, so this targets one Redis (or a primary with replicas / Sentinel),
 * not Redis Cluster sharding. Every timestamp comes from Redis' own TIME, so instances' clocks do not matter.
 */

const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS: call key, slot keys...  ARGV: callId, ttlMs, owner, maxes... → 0 admitted, i = slot i full. */
const ADMIT = `${NOW}
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if not redis.call('ZSCORE', KEYS[i], ARGV[1]) and redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[2 + i]) then
    return i - 1
  end
end
local slots = {}
local old = redis.call('HGET', KEYS[1], 'slots')
if old then slots = cjson.decode(old) end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  table.insert(slots, KEYS[i])
end
redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'slots', cjson.encode(slots))
if not redis.call('HGET', KEYS[1], 'aliases') then redis.call('HSET', KEYS[1], 'aliases', '[]') end
redis.call('PEXPIRE', KEYS[1], ttl)
return 0`;

/** KEYS: call key  ARGV: callId → frees slots and aliases that still name this call. */
const RELEASE = `
local slots = redis.call('HGET', KEYS[1], 'slots')
if slots then for _, k in ipairs(cjson.decode(slots)) do redis.call('ZREM', k, ARGV[1]) end end
local aliases = redis.call('HGET', KEYS[1], 'aliases')
if aliases then
  for _, k in ipairs(cjson.decode(aliases)) do
    if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
  end
end
redis.call('DEL', KEYS[1])
return 0`;

/** KEYS: call key, alias key  ARGV: callId, ttlMs */
const ALIAS = `
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local aliases = {}
local old = redis.call('HGET', KEYS[1], 'aliases')
if old then aliases = cjson.decode(old) end
table.insert(aliases, KEYS[2])
redis.call('HSET', KEYS[1], 'aliases', cjson.encode(aliases))
return 0`;

/**
 * KEYS: instance key, instances zset  ARGV: JSON {id, url, draining, ttl, owner, calls: [{id, key, slots, aliases}]}.
 * Re-asserts everything this instance holds (also after Redis lost it: a restart, a failover).
 */
const HEARTBEAT = `${NOW}
local a = cjson.decode(ARGV[1])
for _, c in ipairs(a.calls) do
  for _, s in ipairs(c.slots) do redis.call('ZADD', s, now + a.ttl, c.id) end
  for _, k in ipairs(c.aliases) do redis.call('SET', k, c.id, 'PX', a.ttl) end
  redis.call('HSET', c.key, 'owner', a.id, 'slots', cjson.encode(c.slots), 'aliases', cjson.encode(c.aliases))
  redis.call('PEXPIRE', c.key, a.ttl)
end
redis.call('HSET', KEYS[1], 'url', a.url, 'draining', a.draining, 'calls', #a.calls)
redis.call('PEXPIRE', KEYS[1], a.ttl)
redis.call('ZADD', KEYS[2], now + a.ttl, a.id)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return 0`;

/** KEYS: slots key → live entries. */
const COUNT = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])`;

/** KEYS: instances zset → live instance ids. */
const LIVE = `${NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')`;

interface Held {
  slots: string[];
  aliases: string[];
}

/**
 * ClusterState in Redis (ioredis). Counters are sorted sets of call ids scored by expiry, so a
 * SIGKILL'd instance's calls stop counting within `ttlMs` with no one cleaning up after it; every
 * live instance re-asserts its own calls each heartbeat. Admission is one Lua script: check every
 * cap and take every slot atomically, so two instances can never both take the last slot.
 */
export class RedisClusterState implements ClusterState {
  readonly shared = true;
  readonly instanceId: string;
  private readonly redis: Redis;
  private readonly held = new Map<string, Held>();
  private readonly shas = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private draining = false;
  private beating: Promise<void> | undefined;

  constructor(private readonly opts: RedisClusterOptions) {
    this.instanceId = opts.instanceId;
    this.redis = new Redis(opts.url, {
      lazyConnect: true,
      // A command issued while disconnected fails at once instead of queueing behind a dead link:
      // the caller (a call set-up) gets a clear 503 instead of waiting.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: opts.commandTimeoutMs,
      connectTimeout: opts.commandTimeoutMs * 5,
      retryStrategy: (times) => Math.min(times * 200, 2000),
    });
    this.redis.on('error', (err) => opts.log.warn({ err: err.message }, 'Redis (cluster state) error'));
  }

  private k(...parts: string[]): string {
    return `${this.opts.keyPrefix}${parts.join(':')}`;
  }

  private async run(script: string, keys: string[], args: (string | number)[]): Promise<unknown> {
    let sha = this.shas.get(script);
    if (!sha) this.shas.set(script, (sha = createHash('sha1').update(script).digest('hex')));
    try {
      return await this.redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err as Error).message.startsWith('NOSCRIPT')) throw err;
      return await this.redis.eval(script, keys.length, ...keys, ...args);
    }
  }

  async start(): Promise<void> {
    await this.redis.connect();
    await this.heartbeat();
    this.timer = setInterval(() => {
      this.beating ??= this.heartbeat()
        .catch((err: Error) => this.opts.log.warn({ err: err.message }, 'cluster heartbeat failed'))
        .finally(() => (this.beating = undefined));
    }, this.opts.heartbeatMs);
    this.timer.unref();
    this.opts.log.info(
      { instance: this.instanceId, heartbeatMs: this.opts.heartbeatMs, ttlMs: this.opts.ttlMs },
      'cluster state in Redis',
    );
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.beating;
    try {
      await this.redis.multi().del(this.k('inst', this.instanceId)).zrem(this.k('instances'), this.instanceId).exec();
    } catch {
      // expires by itself within ttl
    }
    this.redis.disconnect();
  }

  private heartbeat(): Promise<void> {
    const calls = [...this.held].map(([id, h]) => ({ id, key: this.k('call', id), ...h }));
    const arg = JSON.stringify({
      id: this.instanceId,
      url: this.opts.advertiseUrl ?? '',
      draining: this.draining ? '1' : '0',
      ttl: this.opts.ttlMs,
      calls,
    });
    return this.run(HEARTBEAT, [this.k('inst', this.instanceId), this.k('instances')], [arg]).then(() => undefined);
  }

  async admit(callId: string, slots: Slot[]): Promise<string | undefined> {
    const keys = [this.k('call', callId), ...slots.map((s) => this.k('slots', s.key))];
    // Held from before the command goes out: a release() issued meanwhile must see the call (its
    // RELEASE then runs after this ADMIT on the same connection, so nothing is left behind).
    const known = this.held.get(callId);
    const h = known ?? { slots: [], aliases: [] };
    this.held.set(callId, h);
    let r: number;
    try {
      r = Number(await this.run(ADMIT, keys, [callId, this.opts.ttlMs, this.instanceId, ...slots.map((s) => s.max)]));
    } catch (err) {
      if (!known) this.held.delete(callId);
      throw err;
    }
    if (r > 0) {
      if (!known) this.held.delete(callId);
      return slots[r - 1]!.key;
    }
    h.slots.push(...keys.slice(1));
    return undefined;
  }

  async release(callId: string): Promise<void> {
    if (!this.held.delete(callId)) return;
    await this.run(RELEASE, [this.k('call', callId)], [callId]);
  }

  async alias(kind: AliasKind, externalId: string, callId: string): Promise<void> {
    const h = this.held.get(callId);
    const key = this.k('alias', kind, externalId);
    if (h && !h.aliases.includes(key)) h.aliases.push(key);
    await this.run(ALIAS, [this.k('call', callId), key], [callId, this.opts.ttlMs]);
  }

  async resolve(kind: AliasKind, externalId: string): Promise<CallOwner | undefined> {
    const callId = await this.redis.get(this.k('alias', kind, externalId));
    return callId ? this.ownerOf(callId) : undefined;
  }

  async ownerOf(callId: string): Promise<CallOwner | undefined> {
    const owner = await this.redis.hget(this.k('call', callId), 'owner');
    return owner ? { callId, instanceId: owner } : undefined;
  }

  async count(key: string): Promise<number> {
    return Number(await this.run(COUNT, [this.k('slots', key)], []));
  }

  async claim(key: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(this.k('once', key), this.instanceId, 'PX', ttlMs, 'NX')) === 'OK';
  }

  async setDraining(draining: boolean): Promise<void> {
    this.draining = draining;
    await this.heartbeat();
  }

  async instances(): Promise<InstanceInfo[]> {
    const ids = (await this.run(LIVE, [this.k('instances')], [])) as string[];
    if (!ids.length) return [];
    const pipe = this.redis.pipeline();
    for (const id of ids) pipe.hgetall(this.k('inst', id));
    const rows = (await pipe.exec()) ?? [];
    return ids.flatMap((id, i) => {
      const h = rows[i]?.[1] as Record<string, string> | undefined;
      if (!h || !Object.keys(h).length) return [];
      return [{ id, url: h.url || undefined, draining: h.draining === '1', calls: Number(h.calls ?? 0) }];
    });
  }

  /** Raw client, for tests and the bench. */
  get client(): Redis {
    return this.redis;
  }
}
