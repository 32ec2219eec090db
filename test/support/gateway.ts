import { parseConfig } from '../../src/config/load.js';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Call, Front } from '../../src/core/call.js';
import { testLogger } from '../../src/core/logger.js';
import { Gateway } from '../../src/gateway.js';
import { MemoryLeg } from './memory-leg.js';

export const TEST_TOKEN = 'test-token-0123456789abcdef';

/** A real Gateway on ephemeral ports with fronts off, records in memory, local agent as default. */
export async function startTestGateway(overrides: Record<string, unknown> = {}): Promise<Gateway> {
  const config = parseConfig(
    {
      http: { host: '127.0.0.1', port: 0 },
      api: { token: TEST_TOKEN },
      sip: { enabled: false },
      records: { path: ':memory:' },
      shutdown: { drainSec: 0 },
      routes: { local: { kind: 'local', greeting: 'Hello caller.' } },
      ...overrides,
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  await gw.start();
  return gw;
}

/**
 * The sections a real gateway with the SIP front starts from in tests and benches: HTTP on a
 * loopback ephemeral port, records in memory, no shutdown drain, SIP on loopback port 0 with RTP in
 * [rtpMin, rtpMax]. `sip` adds or overrides SIP keys; spread the result and add trunks, routes, etc.
 */
export function loopbackSipConfig(rtpMin: number, rtpMax: number, sip: Record<string, unknown> = {}) {
  return {
    http: { host: '127.0.0.1', port: 0 },
    records: { path: ':memory:' },
    shutdown: { drainSec: 0 },
    sip: {
      enabled: true,
      host: '127.0.0.1',
      port: 0,
      publicAddress: '127.0.0.1',
      rtpPortMin: rtpMin,
      rtpPortMax: rtpMax,
      ...sip,
    },
  };
}

/** A simulated call in progress: a memory leg bridged through the gateway's own connector. */
export async function simulatedCall(
  gw: Gateway,
  info: { front?: Front; from?: string; to?: string; trunk?: string } = {},
): Promise<{ call: Call; leg: MemoryLeg }> {
  const pcmu = createCodec(PCMU_8K);
  const call = gw.ctx.registry.create({
    front: info.front ?? 'test',
    from: info.from ?? '+250788000001',
    to: info.to ?? '+250700000000',
    trunk: info.trunk,
  });
  const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
  await gw.ctx.connector.connect(call, leg);
  return { call, leg };
}

export function api(gw: Gateway, token: string | null = TEST_TOKEN) {
  const base = `http://127.0.0.1:${gw.httpPort}`;
  return async (method: string, path: string, body?: unknown, raw?: string) => {
    const res = await fetch(base + path, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined || raw ? { 'content-type': 'application/json' } : {}),
      },
      body: raw ?? (body !== undefined ? JSON.stringify(body) : undefined),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return {
      status: res.status,
      body: json as Record<string, unknown> & { error?: { code: string; message: string } },
    };
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` every 20 ms; `what` may be a function, read at the timeout (e.g. a child's output so far). */
export async function waitFor(
  cond: () => boolean,
  timeoutMs = 10_000,
  what: string | (() => string) = 'condition',
): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(20);
  }
}

/** UDP sockets this process holds (RTP legs, werift ICE sockets): for "nothing left behind" checks. */
export function openUdpSockets(): number {
  const handles = (process as unknown as { _getActiveHandles(): object[] })._getActiveHandles();
  return handles.filter((x) => x.constructor?.name === 'Socket' && 'addMembership' in x).length;
}
