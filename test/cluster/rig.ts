import { startSipHarness, type SipHarness, type SipHarnessOptions } from '../peers/sip/harness.js';
import { freeTcpPort } from '../support/free-ports.js';
import { TEST_TOKEN } from '../support/gateway.js';

/**
 * One instance's config overrides in the two-gateway cluster tests: its own HTTP port (also the
 * URL its peers forward to), the shared secret and Redis, and heartbeats short enough that a dead
 * instance expires within a test (TTL 2 s).
 */
export const clusterConfig = (id: string, httpPort: number, redisUrl: string, secret: string, token = TEST_TOKEN) => ({
  http: { host: '127.0.0.1', port: httpPort },
  api: { token },
  cluster: {
    instanceId: id,
    advertiseUrl: `http://127.0.0.1:${httpPort}`,
    secret,
    heartbeatSec: 0.5,
    ttlSec: 2,
    redis: { url: redisUrl },
  },
});

export type Pair = Record<'a' | 'b', SipHarness>;

/**
 * Instances gw-a and gw-b (the same `opts`, each its clusterConfig) sharing one Redis. Each goes
 * into `gws` as soon as it runs, so an afterAll stops what started even if the second start fails.
 */
export async function startPair(gws: Pair, redisUrl: string, secret: string, opts: SipHarnessOptions): Promise<void> {
  for (const id of ['a', 'b'] as const) {
    const port = await freeTcpPort();
    gws[id] = await startSipHarness({ ...opts, config: clusterConfig(`gw-${id}`, port, redisUrl, secret) });
  }
}

/** The REST API of one instance, with the cluster tests' token; the body parsed as JSON. */
export const api = (h: SipHarness, method: string, path: string, body?: unknown) =>
  fetch(`http://127.0.0.1:${h.gw.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${TEST_TOKEN}`, 'content-type': 'application/json' },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));
