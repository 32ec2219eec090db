import { waitFor } from '../../support/gateway.js';
import { startSipHarness, type SipHarness, type SipHarnessOptions } from '../sip/harness.js';
import type { DrachtioServer } from './server.js';

export interface DrachtioHarness extends SipHarness {
  /** Where carriers send SIP: drachtio-server's UDP/TCP contact. */
  target: string;
}

/** The real gateway with `sip.engine: drachtio` connected to `server`, resolved once it is ready. */
export async function startDrachtioHarness(
  server: DrachtioServer,
  opts: SipHarnessOptions & { linkGraceSec?: number } = {},
): Promise<DrachtioHarness> {
  const h = await startSipHarness({
    ...opts,
    sip: {
      engine: 'drachtio',
      drachtio: {
        host: '127.0.0.1',
        port: server.adminPort,
        secret: server.secret,
        ...(opts.linkGraceSec ? { linkGraceSec: opts.linkGraceSec } : {}),
      },
      ...opts.sip,
    },
  });
  try {
    await waitFor(() => h.front.ready(), 20_000, 'connected to drachtio-server');
  } catch (err) {
    await h.stop();
    throw new Error(`${(err as Error).message}\n${server.output().slice(-3000)}`);
  }
  return { ...h, port: server.sipPort, target: `127.0.0.1:${server.sipPort}` };
}
