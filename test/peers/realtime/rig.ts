import { BackendRegistry } from '../../../src/ai/backends.js';
import { type RealtimeRouteConfig, routeSchema } from '../../../src/config/schema.js';
import type { BridgeHooks } from '../../../src/core/bridge.js';
import type { Call } from '../../../src/core/call.js';
import { CallConnector } from '../../../src/core/connector.js';
import { FrameClock } from '../../../src/core/frame-clock.js';
import { testLogger } from '../../../src/core/logger.js';
import { CallRegistry } from '../../../src/core/registry.js';
import { Router } from '../../../src/core/router.js';
import { type RealtimeTestServerOptions, RealtimeTestServer } from './server.js';

export interface RealtimeRig {
  server: RealtimeTestServer;
  route: RealtimeRouteConfig;
  clock: FrameClock;
  registry: CallRegistry;
  connector: CallConnector;
  /** A fresh call (front `test`), ended by `stop()`. */
  newCall(): Call;
  /** Ends the rig's calls, then stops the server. */
  stop(): Promise<void>;
}

/**
 * The core's path to a Realtime route without a front: the local Realtime server, one `realtime`
 * route on it (`routeExtra` over the defaults), the connector, a frame clock and a call registry.
 * Tests attach their own legs (MemoryLeg) to `newCall()`s.
 */
export async function startRealtimeRig(
  opts: RealtimeTestServerOptions = {},
  routeExtra: Record<string, unknown> = {},
  hooks?: BridgeHooks,
): Promise<RealtimeRig> {
  const server = new RealtimeTestServer(opts);
  await server.start();
  const route = routeSchema.parse({
    kind: 'realtime',
    url: server.url,
    apiKey: 'sk-test-0123456789',
    connectTimeoutMs: 3000,
    ...routeExtra,
  }) as RealtimeRouteConfig;
  const clock = new FrameClock();
  const registry = new CallRegistry(testLogger());
  const router = new Router({ routes: { openai: route }, routing: { default: 'openai', rules: [] }, trunks: [] });
  const backends = new BackendRegistry();
  const connector = new CallConnector({ router, clock, backendFor: (r) => backends.backendFor(r), hooks });
  const calls: Call[] = [];
  return {
    server,
    route,
    clock,
    registry,
    connector,
    newCall() {
      const call = registry.create({ front: 'test', from: '+250788000001', to: '+250700000000' });
      calls.push(call);
      return call;
    },
    async stop() {
      for (const call of calls.reverse()) await call.end({ by: 'gateway', cause: 'test_done' });
      await server.stop();
    },
  };
}
