/**
 * "Have we acted on this already?" for webhook deliveries and calls. `claim` is true exactly once per
 * key within `ttlMs`. The gateway uses one store per process; several gateways behind one webhook
 * URL share one by implementing this over a shared store (Redis `SET key 1 NX PX ttl` is the whole
 * implementation), so a delivery any of them acted on is a duplicate for all.
 */
export interface OnceStore {
  claim(key: string, ttlMs: number): Promise<boolean>;
}

/** In-process OnceStore: expiring entries, bounded (oldest dropped first) so a flood cannot grow it. */
export class MemoryOnceStore implements OnceStore {
  private readonly expiry = new Map<string, number>();

  constructor(private readonly maxEntries = 100_000) {}

  claim(key: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    // Insertion order is claim order; entries share few TTLs, so expired ones sit at the front.
    for (const [k, until] of this.expiry) {
      if (until > now && this.expiry.size <= this.maxEntries) break;
      this.expiry.delete(k);
    }
    const until = this.expiry.get(key);
    if (until !== undefined && until > now) return Promise.resolve(false);
    this.expiry.delete(key);
    this.expiry.set(key, now + ttlMs);
    return Promise.resolve(true);
  }

  get size(): number {
    return this.expiry.size;
  }
}
