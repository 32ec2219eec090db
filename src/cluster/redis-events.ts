import { Redis } from 'ioredis';
import type { EventRelay, RelayedEvent, RelayedEventName } from '../core/cluster-state.js';
import type { Logger } from '../core/logger.js';

export interface RedisEventRelayOptions {
  url: string;
  instanceId: string;
  keyPrefix: string;
  commandTimeoutMs: number;
  log: Logger;
  /** Larger messages are not published, and not accepted from the channel (a call view is a few kB). */
  maxMessageBytes?: number;
  /** Publishes awaiting Redis beyond this are dropped: a slow Redis must not grow our memory. */
  maxInFlight?: number;
  /** Called for every event not relayed (too_large, backlog, redis_error, malformed). */
  onDropped?: (reason: string) => void;
}

const NAMES = new Set<RelayedEventName>(['call', 'ended', 'transcript']);

/**
 * EventRelay over Redis pub/sub (one channel, `<prefix>events`): fire-and-forget fits a live feed,
 * and Redis is already the cluster's shared piece. A subscribed connection can do nothing else in
 * the RESP2 protocol, so publishing and subscribing use two connections of their own, apart from the
 * cluster state's (admission must never queue behind event traffic).
 */
export class RedisEventRelay implements EventRelay {
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly channel: string;
  private readonly listeners = new Set<(ev: RelayedEvent) => void>();
  private readonly maxBytes: number;
  private readonly maxInFlight: number;
  private inFlight = 0;
  private lastWarn = 0;

  constructor(private readonly opts: RedisEventRelayOptions) {
    this.channel = `${opts.keyPrefix}events`;
    this.maxBytes = opts.maxMessageBytes ?? 256 * 1024;
    this.maxInFlight = opts.maxInFlight ?? 1000;
    const common = { lazyConnect: true, retryStrategy: (times: number) => Math.min(times * 200, 2000) };
    this.pub = new Redis(opts.url, {
      ...common,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: opts.commandTimeoutMs,
    });
    // ioredis re-subscribes by itself after a reconnect.
    this.sub = new Redis(opts.url, common);
    for (const c of [this.pub, this.sub])
      c.on('error', (err: Error) => this.warn({ err: err.message }, 'Redis (event relay) error'));
    this.sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.receive(message);
    });
  }

  async start(): Promise<void> {
    await Promise.all([this.pub.connect(), this.sub.connect()]);
    await this.sub.subscribe(this.channel);
  }

  async stop(): Promise<void> {
    this.listeners.clear();
    this.pub.disconnect();
    this.sub.disconnect();
    return Promise.resolve();
  }

  publish(event: RelayedEventName, data: unknown): void {
    const message = JSON.stringify({ origin: this.opts.instanceId, event, data });
    if (Buffer.byteLength(message) > this.maxBytes) return this.drop('too_large', { event });
    if (this.inFlight >= this.maxInFlight) return this.drop('backlog', { event });
    this.inFlight++;
    this.pub
      .publish(this.channel, message)
      .catch((err: Error) => this.drop('redis_error', { event, err: err.message }))
      .finally(() => this.inFlight--);
  }

  subscribe(fn: (ev: RelayedEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private receive(message: string): void {
    if (message.length > this.maxBytes) return this.drop('too_large', {});
    let ev: RelayedEvent;
    try {
      ev = JSON.parse(message) as RelayedEvent;
    } catch {
      return this.drop('malformed', {});
    }
    if (!ev || typeof ev.origin !== 'string' || !NAMES.has(ev.event)) return this.drop('malformed', {});
    if (ev.origin === this.opts.instanceId) return; // our own, already sent to our streams locally
    for (const fn of this.listeners) {
      try {
        fn(ev);
      } catch (err) {
        this.warn({ err: (err as Error).message }, 'event relay listener failed');
      }
    }
  }

  private drop(reason: string, detail: Record<string, unknown>): void {
    this.opts.onDropped?.(reason);
    this.warn({ reason, ...detail }, 'cluster call event not relayed');
  }

  /** At most one warning per 10 s: a Redis outage must not flood the log with one line per event. */
  private warn(detail: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if (now - this.lastWarn < 10_000) return;
    this.lastWarn = now;
    this.opts.log.warn(detail, msg);
  }
}
