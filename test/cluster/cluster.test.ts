import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency } from '../support/audio.js';
import { api, startPair, type Pair } from './rig.js';
import { TEST_TOKEN, waitFor } from '../support/gateway.js';
import { startDispatcher, type KamailioDispatcher } from '../peers/kamailio/dispatcher.js';
import { startRedis, type RedisServer } from '../peers/redis/server.js';
import { runSipp, SIPP_NUMS, usePcapDir, type SipHarness } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { startGatewayProcess } from '../support/gateway-process.js';

/**
 * Issue 14: the scale-out topology on loopback, every piece real: redis-server for shared state,
 * the shipped config/kamailio/kamailio.cfg dispatching over two gateways, sipp as the carrier, and a
 * third gateway as a real `npm start` process for the SIGKILL case.
 */
const missing = ['kamailio', 'redis-server', 'sipp'].filter(
  (bin) => spawnSync(bin, bin === 'kamailio' ? ['-v'] : ['-v']).error !== undefined,
);
if (missing.length)
  console.warn(`SKIPPED cluster test: ${missing.join(', ')} not installed (bash .ci/run installs them from Debian)`);

const SECRET = 'cluster-test-secret-0123456789';
const MAX_CALLS = 16;
const TRUNK = { name: 'mtn-rwanda', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0' };

/** waitFor for an async condition (cluster state lives in Redis). */
async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let redis: RedisServer;
let kam: KamailioDispatcher;
const gws = {} as Pair;
const pcap = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1500)));

beforeAll(async () => {
  if (missing.length) return;
  redis = await startRedis();
  await startPair(gws, redis.url, SECRET, {
    trunks: [{ ...TRUNK, maxCalls: MAX_CALLS }],
    // sipp plays 1.5 s of tone, then holds the call silently for seconds.
    sip: { rtpTimeoutSec: 30, trustedProxies: ['127.0.0.1/32'] },
  });
  kam = await startDispatcher([`127.0.0.1:${gws.a.port}`, `127.0.0.1:${gws.b.port}`]);
}, 60_000);

afterAll(async () => {
  await Promise.all(Object.values(gws).map((h) => h.stop()));
  await kam?.stop();
  await redis?.stop();
});

const throughKamailio = (calls: number, pauseMs: number, args: string[] = []) =>
  runSipp({
    scenario: 'uac-cluster.xml',
    target: `127.0.0.1:${kam.port}`,
    vars: { ...SIPP_NUMS, KPORT: String(kam.port), PAUSE: String(pauseMs), PCAP: join(pcap(), 'pcma-1000.pcap') },
    calls,
    args,
    timeoutSec: 90,
  });

/** Every call each gateway creates from now on. */
function collect(): Record<'a' | 'b', Call[]> {
  const got = { a: [] as Call[], b: [] as Call[] };
  for (const id of ['a', 'b'] as const) gws[id].gw.ctx.registry.on('created', (c) => got[id].push(c));
  return got;
}

const heardTone = (h: SipHarness, c: Call) => {
  const pcm = h.sessions.get(c.id)?.heardPcm(10);
  return pcm && pcm.length > 4000 ? dominantFrequency(pcm, 8000) : 0;
};

describe.skipIf(missing.length > 0)('two gateways behind Kamailio with shared state in Redis', () => {
  it('60 sipp calls through the dispatcher are spread over both gateways, each carrying the caller audio', async () => {
    const got = collect();
    // 6 calls/s, at most 14 at once: below the trunk's cluster limit, gentle on 2 shared cores.
    const res = await throughKamailio(60, 2000, ['-r', '6', '-l', '14']);
    expect(res.code, res.errors.slice(-3000) + res.stderr + kam.log().slice(-2000)).toBe(0);
    expect(got.a.length + got.b.length).toBe(60);
    // Round-robin: neither gateway idle, neither carrying nearly everything.
    expect(Math.min(got.a.length, got.b.length)).toBeGreaterThanOrEqual(20);
    for (const id of ['a', 'b'] as const) {
      await waitFor(() => got[id].every((c) => c.ended), 10_000, `gw-${id} calls ended`);
      for (const c of got[id]) {
        expect(c.endReason, c.id).toMatchObject({ by: 'remote', cause: 'bye' });
        expect(Math.abs(heardTone(gws[id], c) - 1000), `tone on ${c.id} (gw-${id})`).toBeLessThan(20);
      }
    }
    // Counters went back to zero cluster-wide once every call had ended.
    await until(async () => (await gws.a.gw.ctx.cluster.count('trunk:mtn-rwanda')) === 0, 5000, 'counter at 0');
  });

  it('maxCalls is the cluster limit: the call past it gets 503; either API lists, and hangs up, every call', async () => {
    const got = collect();
    const held = throughKamailio(MAX_CALLS, 8000, ['-r', '20', '-l', String(MAX_CALLS)]);
    await waitFor(
      () => [...got.a, ...got.b].filter((c) => c.state === 'bridged').length === MAX_CALLS,
      30_000,
      `${MAX_CALLS} calls bridged`,
    );
    // Each gateway alone is well under the limit: only the shared counter can refuse the next call.
    expect(Math.max(got.a.length, got.b.length)).toBeLessThan(MAX_CALLS);
    expect(await gws.b.gw.ctx.cluster.count('trunk:mtn-rwanda')).toBe(MAX_CALLS);
    const refused = await runSipp({
      scenario: 'uac-rejected.xml',
      target: `127.0.0.1:${kam.port}`,
      vars: { ...SIPP_NUMS, STATUS: '503' },
    });
    expect(refused.code, refused.errors + refused.messages.slice(-2000)).toBe(0);
    expect(refused.messages).toMatch(/SIP\/2\.0 503 Service Unavailable \(all gateways busy\)[\s\S]*Retry-After: 5/);

    for (const h of [gws.a, gws.b]) {
      const list = await api(h, 'GET', '/v1/calls');
      expect(list.status).toBe(200);
      const ids = (list.body.calls as { id: string }[]).map((c) => c.id).sort();
      expect(ids).toEqual([...got.a, ...got.b].map((c) => c.id).sort());
      expect((list.body.instances as { id: string; error?: string }[]).map((i) => i.id).sort()).toEqual([
        'gw-a',
        'gw-b',
      ]);
    }
    // An operator on gw-a hangs up a call gw-b owns; say reaches it too (409: the tone AI cannot speak).
    const target = got.b[0]!;
    const said = await api(gws.a, 'POST', `/v1/calls/${target.id}/say`, { text: 'hello' });
    expect(said.status).toBe(409);
    const hung = await api(gws.a, 'DELETE', `/v1/calls/${target.id}`, { reason: 'cluster test' });
    expect(hung.status).toBe(200);
    expect(target.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup', detail: 'cluster test' });
    await held; // one scenario fails (its BYE met a closed dialog); the others end normally
    const rest = [...got.a, ...got.b].filter((c) => c !== target);
    await waitFor(() => rest.every((c) => c.ended), 15_000, 'held calls ended');
    for (const c of rest) expect(c.endReason, c.id).toMatchObject({ by: 'remote', cause: 'bye' });
    await until(async () => (await gws.a.gw.ctx.cluster.count('trunk:mtn-rwanda')) === 0, 5000, 'counter at 0');
  });

  it('SIGKILL: a dead gateway process drops out; its calls expire from Redis within the TTL and the counter recovers', async () => {
    const g = await startGatewayProcess({
      token: TEST_TOKEN,
      records: ':memory:',
      readyMs: 90_000,
      env: ({ httpPort }) => ({
        GW__SIP__PUBLIC_ADDRESS: '127.0.0.1',
        GW__TRUNKS: JSON.stringify([{ ...TRUNK, maxCalls: MAX_CALLS }]),
        GW__CLUSTER__INSTANCE_ID: 'gw-c',
        GW__CLUSTER__ADVERTISE_URL: `http://127.0.0.1:${httpPort}`,
        GW__CLUSTER__SECRET: SECRET,
        GW__CLUSTER__HEARTBEAT_SEC: '0.5',
        GW__CLUSTER__TTL_SEC: '2',
        GW__CLUSTER__REDIS__URL: redis.url,
      }),
    });
    const { sipPort } = g;
    try {
      const calls = runSipp({
        scenario: 'uac-audio.xml',
        target: `127.0.0.1:${sipPort}`,
        vars: { ...SIPP_NUMS, PCAP: join(pcap(), 'pcma-1000.pcap'), PAUSE: '30000', PT: '8', CODEC: 'PCMA' },
        calls: 3,
        args: ['-r', '10', '-l', '3'],
        timeoutSec: 15,
      });
      const cluster = gws.a.gw.ctx.cluster;
      await until(async () => (await cluster.count('trunk:mtn-rwanda')) === 3, 20_000, "gw-c's 3 calls counted");
      const listed = await api(gws.a, 'GET', '/v1/calls');
      expect((listed.body.calls as unknown[]).length).toBe(3);
      expect((listed.body.instances as { id: string; calls: number }[]).find((i) => i.id === 'gw-c')?.calls).toBe(3);

      g.proc.kill('SIGKILL');
      const killedAt = Date.now();
      await until(async () => (await cluster.count('trunk:mtn-rwanda')) === 0, 10_000, 'counter recovered');
      // ttl 2 s, plus one heartbeat's slack for the last refresh before the kill.
      expect(Date.now() - killedAt).toBeLessThan(2000 + 500 + 1500);
      await until(async () => !(await cluster.instances()).some((i) => i.id === 'gw-c'), 5000, 'gw-c gone');
      const after = await api(gws.a, 'GET', '/v1/calls');
      expect(after.body.calls).toEqual([]);
      // The cluster takes a full load of calls again.
      expect(await cluster.admit('probe', [{ key: 'trunk:mtn-rwanda', max: 1 }])).toBeUndefined();
      await cluster.release('probe');
      await calls.catch(() => undefined);
    } finally {
      g.proc.kill('SIGKILL');
    }
  }, 150_000);

  it('SIGTERM (drain) on one gateway: its calls finish, Kamailio sends new calls to the other, none refused', async () => {
    const got = collect();
    const first = throughKamailio(6, 5000, ['-r', '10', '-l', '6']);
    await waitFor(() => got.b.filter((c) => c.state === 'bridged').length >= 2, 20_000, 'gw-b carrying calls');
    await waitFor(() => got.a.length + got.b.length === 6, 20_000, 'first batch placed');
    const onB = [...got.b];
    // What the SIGTERM handler runs: refuse new work (OPTIONS 503), wait for calls, then stop.
    const stopping = gws.b.gw.stop('shutdown', 20_000);
    const countA = got.a.length;
    const second = await throughKamailio(10, 500, ['-r', '5', '-l', '5']);
    expect(second.code, second.errors.slice(-3000) + kam.log().slice(-3000)).toBe(0);
    expect(got.a.length - countA).toBe(10);
    expect(got.b.length).toBe(onB.length);
    expect((await first).code).toBe(0);
    await stopping;
    for (const c of onB) expect(c.endReason, c.id).toMatchObject({ by: 'remote', cause: 'bye' });
    expect(kam.log()).toMatch(/FAILOVER|503/);
  });
});
