import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { waitFor } from '../../support/gateway.js';
import { startSipHarness, type SipHarness, type SipHarnessOptions } from '../sip/harness.js';
import { toneRtp, writePcap } from '../sip/pcap.js';
import { startDrachtioServer, type DrachtioServer } from './server.js';

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

export interface DrachtioRig {
  /** A PCMA tone pcap (`toneRtp`) written once for the test file. */
  readonly pcap: string;
  /** The drachtio-server of the running test (after start()). */
  readonly server: DrachtioServer;
  /** A fresh drachtio-server and the gateway connected to it; both stopped after the test. */
  start(opts?: Parameters<typeof startDrachtioHarness>[1]): Promise<DrachtioHarness>;
}

/**
 * Registers a test file's hooks for drachtio tests: a PCMA tone pcap in a temp dir for the file,
 * and after each test the gateway and drachtio-server it started are stopped.
 */
export function useDrachtioRig(tone: { hz: number; ms: number }): DrachtioRig {
  let server: DrachtioServer | undefined;
  let h: DrachtioHarness | undefined;
  let dir: string | undefined;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'drachtio-tone-'));
    writePcap(join(dir, `pcma-${tone.hz}.pcap`), toneRtp('PCMA', tone.hz, tone.ms));
  });
  afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));
  afterEach(async () => {
    await h?.stop();
    await server?.stop();
    h = undefined;
    server = undefined;
  });
  return {
    get pcap() {
      if (!dir) throw new Error('the pcap is written in beforeAll');
      return join(dir, `pcma-${tone.hz}.pcap`);
    },
    get server() {
      if (!server) throw new Error('no drachtio-server: call start() first');
      return server;
    },
    async start(opts = {}) {
      server = await startDrachtioServer();
      h = await startDrachtioHarness(server, opts);
      return h;
    },
  };
}
