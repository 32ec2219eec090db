import { afterAll, afterEach, beforeAll, beforeEach, it, type TestFunction } from 'vitest';
import { startDrachtioHarness } from '../drachtio/gateway.js';
import {
  drachtioUnavailable,
  startDrachtioServer,
  type DrachtioServer,
  type DrachtioServerOptions,
} from '../drachtio/server.js';
import { startSipHarness, type SipHarness, type SipHarnessOptions } from './harness.js';

/**
 * One SIP suite, two engines: a test file runs its describe block once per engine
 * (`describe.each(SIP_ENGINES)`) and starts gateways through `useSipEngine`. The embedded engine
 * owns its socket; the drachtio engine connects to a real drachtio-server (one per file, shared by
 * its tests: a new gateway connects to it for each test), and `h.port` is then drachtio-server's
 * UDP/TCP contact, so sipp and baresip target `h.port` the same way on both.
 */
export type SipEngineName = 'embedded' | 'drachtio';

export const SIP_ENGINES: { engine: SipEngineName }[] = [{ engine: 'embedded' }, { engine: 'drachtio' }];

export interface SipEngineFixture {
  readonly engine: SipEngineName;
  /** The file's drachtio-server (drachtio runs only, after its beforeAll). */
  readonly server: DrachtioServer | undefined;
  /** The gateway on this engine; stopped after the test. */
  start(opts?: SipHarnessOptions): Promise<SipHarness>;
  /**
   * it() for a case this engine cannot run: skipped on `engines`, its title saying why, so the
   * gap is visible in every run (never silent).
   */
  itExcept(engines: SipEngineName[], why: string): (title: string, fn: TestFunction, timeout?: number) => void;
}

/**
 * Registers the hooks for one engine inside a describe block. When drachtio-server cannot run here,
 * drachtioUnavailable() prints one line saying why and every drachtio test is skipped with that note.
 * `opts.drachtio` configures the file's drachtio-server (e.g. an IPv6 contact).
 */
export function useSipEngine(engine: SipEngineName, opts: { drachtio?: DrachtioServerOptions } = {}): SipEngineFixture {
  let server: DrachtioServer | undefined;
  let h: SipHarness | undefined;
  const unavailable = engine === 'drachtio' ? drachtioUnavailable() : undefined;
  if (engine === 'drachtio') {
    beforeAll(async () => {
      if (!unavailable) server = await startDrachtioServer(opts.drachtio);
    });
    afterAll(async () => {
      await server?.stop();
      server = undefined;
    });
    beforeEach((ctx) => {
      if (unavailable) ctx.skip(`drachtio-server unavailable: ${unavailable}`);
    });
  }
  afterEach(async () => {
    await h?.stop();
    h = undefined;
  });
  return {
    engine,
    get server() {
      return server;
    },
    async start(opts = {}) {
      if (h) throw new Error('one gateway per test');
      if (engine === 'embedded') h = await startSipHarness(opts);
      else {
        if (!server) throw new Error('no drachtio-server (beforeAll failed)');
        h = await startDrachtioHarness(server, opts);
      }
      return h;
    },
    itExcept(engines, why) {
      return (title, fn, timeout) =>
        engines.includes(engine) ? it.skip(`${title} [not on ${engine}: ${why}]`, fn, timeout) : it(title, fn, timeout);
    },
  };
}
