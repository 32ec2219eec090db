import { parseConfig } from '../../src/config/load.js';
import { testLogger } from '../../src/core/logger.js';
import { buildFronts } from '../../src/fronts.js';
import { Gateway } from '../../src/gateway.js';
import { loopbackSipConfig } from './gateway.js';
import { leasePortRange, releasePortRange } from './ports.js';

/**
 * A real gateway with the SIP front and the browser phone (SIP over WebSocket + WebRTC leg) on
 * leased media ports, routed to the local agent. `token` unset means `npm start` without API_TOKEN.
 */
export async function startBrowserGateway(
  opts: { token?: string; httpHost?: string; greeting?: string; maxCalls?: number } = {},
): Promise<{ gw: Gateway; base: string; stop(): Promise<void> }> {
  const range = leasePortRange(100);
  const [port] = range;
  const config = parseConfig(
    {
      ...loopbackSipConfig(port, port + 49),
      http: { host: opts.httpHost ?? '127.0.0.1', port: 0 },
      ...(opts.token ? { api: { token: opts.token } } : {}),
      browser: { publicIp: '127.0.0.1', udpPortMin: port + 50, udpPortMax: port + 99, maxCalls: opts.maxCalls ?? 2 },
      routes: { local: { kind: 'local', greeting: opts.greeting ?? 'Hello caller, this is the local agent.' } },
      routing: { default: 'local' },
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  for (const f of buildFronts(gw.ctx)) gw.addFront(f);
  await gw.start();
  return {
    gw,
    base: `http://127.0.0.1:${gw.httpPort}`,
    async stop() {
      await gw.stop('test_done', 0);
      releasePortRange(range);
    },
  };
}
