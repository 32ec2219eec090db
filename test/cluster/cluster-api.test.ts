import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { api, startPair, type Pair } from './rig.js';
import { TEST_TOKEN, waitFor } from '../support/gateway.js';
import { startRedis, type RedisServer } from '../peers/redis/server.js';
import { nextCall, runSipp, SIPP_NUMS, usePcapDir, type SipHarness } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

/**
 * Issue 14, the ops API across instances: GET /v1/events on one instance carries every instance's
 * calls (snapshot + Redis relay, each event once), and GET /v1/trunks counts a trunk's calls
 * cluster-wide. Two gateways sharing redis-server, sipp calling each directly.
 */
const missing = ['redis-server', 'sipp'].filter((bin) => spawnSync(bin, ['-v']).error !== undefined);
if (missing.length) console.warn(`SKIPPED cluster API test: ${missing.join(', ')} not installed`);

const SECRET = 'cluster-api-secret-0123456789';

let redis: RedisServer;
const gws = {} as Pair;
const pcap = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1000)));

beforeAll(async () => {
  if (missing.length) return;
  redis = await startRedis();
  await startPair(gws, redis.url, SECRET, { sip: { rtpTimeoutSec: 60 } });
}, 60_000);

afterAll(async () => {
  await Promise.all(Object.values(gws).map((h) => h.stop()));
  await redis?.stop();
});

/** A carrier call held up for `pauseMs` (sipp hangs up after), and the Call it became. */
async function hold(h: SipHarness, pauseMs: number): Promise<{ call: Call; done: Promise<unknown> }> {
  const created = nextCall(h);
  const done = runSipp({
    scenario: 'uac-audio.xml',
    target: `127.0.0.1:${h.port}`,
    vars: { ...SIPP_NUMS, PCAP: join(pcap(), 'pcma-1000.pcap'), PAUSE: String(pauseMs), PT: '8', CODEC: 'PCMA' },
    timeoutSec: Math.ceil(pauseMs / 1000) + 15,
  });
  const call = await created;
  await waitFor(() => call.state === 'bridged', 10_000, 'call bridged');
  return { call, done };
}

interface SseEvent {
  event: string;
  data: { id?: string; callId?: string; state?: string } & Record<string, unknown>;
}

/** GET /v1/events, parsed as it arrives. */
async function openEvents(h: SipHarness) {
  const ctl = new AbortController();
  const res = await fetch(`http://127.0.0.1:${h.gw.httpPort}/v1/events`, {
    headers: { authorization: `Bearer ${TEST_TOKEN}` },
    signal: ctl.signal,
  });
  expect(res.status).toBe(200);
  const events: SseEvent[] = [];
  let buf = '';
  const decoder = new TextDecoder();
  void (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) as SseEvent['data'] });
        }
      }
    } catch {
      // aborted
    }
  })();
  return {
    events,
    of: (event: string, id: string) => events.filter((e) => e.event === event && (e.data.id ?? e.data.callId) === id),
    close: () => ctl.abort(),
  };
}

describe.skipIf(missing.length > 0)('the ops API across two instances', () => {
  it("GET /v1/events on either instance carries both instances' calls, each event once", async () => {
    const onB = await hold(gws.b, 20_000);
    const [sa, sb] = await Promise.all([openEvents(gws.a), openEvents(gws.b)]);
    try {
      // gw-b's live call is in gw-a's snapshot (from gw-b), and once in gw-b's own.
      await waitFor(() => sa.events.some((e) => e.event === 'snapshot'), 5000, 'snapshot on gw-a');
      await waitFor(() => sb.events.some((e) => e.event === 'snapshot'), 5000, 'snapshot on gw-b');
      for (const s of [sa, sb]) {
        const snap = s.events.find((e) => e.event === 'snapshot')!.data as unknown as { id: string; state: string }[];
        expect(snap.filter((c) => c.id === onB.call.id).map((c) => c.state)).toEqual(['bridged']);
      }

      // A short call on gw-a: both streams see it come, get bridged and end.
      const onA = await hold(gws.a, 500);
      await onA.done;
      await waitFor(() => onA.call.ended, 5000, 'gw-a call ended');
      // The operator on gw-a hangs up gw-b's call (relayed to the owner).
      expect((await api(gws.a, 'DELETE', `/v1/calls/${onB.call.id}`, { reason: 'sse test' })).status).toBe(200);
      await onB.done.catch(() => undefined);

      for (const [name, s] of [
        ['gw-a', sa],
        ['gw-b', sb],
      ] as const) {
        for (const c of [onA.call, onB.call])
          await waitFor(() => s.of('ended', c.id).length > 0, 5000, `${name} stream: ${c.id} ended`);
        // Each event once: one 'ended' per call, one 'call' per state, in order.
        for (const c of [onA.call, onB.call]) expect(s.of('ended', c.id), `${name} ${c.id}`).toHaveLength(1);
        expect(
          s.of('call', onA.call.id).map((e) => e.data.state),
          `${name}: gw-a call states`,
        ).toEqual(['ringing', 'answered', 'bridged', 'ended']);
        expect(s.of('ended', onB.call.id)[0]!.data).toMatchObject({
          state: 'ended',
          endReason: { by: 'operator', cause: 'api_hangup', detail: 'sse test' },
        });
      }
      // Relayed views leave the SIP ladder to GET /v1/calls/:id.
      expect(sa.of('ended', onB.call.id)[0]!.data.signalling).toBeUndefined();
      expect(sb.of('ended', onB.call.id)[0]!.data.signalling).toBeDefined();
    } finally {
      sa.close();
      sb.close();
    }
  });

  it('hostile: garbage, unknown events and oversized messages on the relay channel reach no stream', async () => {
    const s = await openEvents(gws.a);
    const pub = new Redis(redis.url);
    try {
      await waitFor(() => s.events.some((e) => e.event === 'snapshot'), 5000, 'snapshot');
      await pub.publish('gw:events', 'not json');
      await pub.publish('gw:events', JSON.stringify({ origin: 'gw-x', event: 'levels', data: { callId: 'x' } }));
      await pub.publish('gw:events', JSON.stringify({ event: 'call', data: { id: 'no-origin' } }));
      await pub.publish(
        'gw:events',
        JSON.stringify({ origin: 'gw-x', event: 'transcript', data: { callId: 'big', text: 'x'.repeat(300_000) } }),
      );
      await pub.publish('gw:events', JSON.stringify({ origin: 'gw-x', event: 'transcript', data: { callId: 'mark' } }));
      // The channel keeps order: once the marker is here, everything before it was handled.
      await waitFor(() => s.of('transcript', 'mark').length === 1, 5000, 'marker relayed');
      expect(s.events.map((e) => e.event)).toEqual(['snapshot', 'transcript']);
      const metrics = await (
        await fetch(`http://127.0.0.1:${gws.a.gw.httpPort}/metrics`, {
          headers: { authorization: `Bearer ${TEST_TOKEN}` },
        })
      ).text();
      expect(metrics).toMatch(/gateway_cluster_events_dropped_total\{reason="malformed"\} 3/);
      expect(metrics).toMatch(/gateway_cluster_events_dropped_total\{reason="too_large"\} 1/);
    } finally {
      s.close();
      pub.disconnect();
    }
  });

  it("GET /v1/trunks counts a trunk's calls cluster-wide, with each instance's share", async () => {
    const onB = await hold(gws.b, 20_000);
    try {
      for (const h of [gws.a, gws.b]) {
        const r = await api(h, 'GET', '/v1/trunks');
        expect(r.status).toBe(200);
        const mtn = (r.body.trunks as { name: string; activeCalls: number; instances: unknown[] }[]).find(
          (t) => t.name === 'mtn-rwanda',
        )!;
        expect(mtn.activeCalls).toBe(1);
        expect(mtn.instances).toEqual(
          expect.arrayContaining([
            { id: 'gw-a', activeCalls: 0 },
            { id: 'gw-b', activeCalls: 1 },
          ]),
        );
      }
    } finally {
      await api(gws.a, 'DELETE', `/v1/calls/${onB.call.id}`, {});
      await onB.done.catch(() => undefined);
    }
    await waitFor(() => onB.call.ended, 5000, 'ended');
    const r = await api(gws.a, 'GET', '/v1/trunks');
    expect(
      (r.body.trunks as { name: string; activeCalls: number }[]).find((t) => t.name === 'mtn-rwanda')!.activeCalls,
    ).toBe(0);
  });
});
