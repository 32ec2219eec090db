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
