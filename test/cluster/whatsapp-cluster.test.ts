import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dominantFrequency, tone } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { clusterConfig } from './rig.js';
import { startRedis, type RedisServer } from '../peers/redis/server.js';
import { API_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { freeTcpPort } from '../support/free-ports.js';

/**
 * Issue 14 deliver 2: Meta's webhooks reach whichever instance the load balancer picks. A WhatsApp
 * call offered to gw-a has its later events delivered to gw-b, which forwards them to the owner.
 */
const noRedis = spawnSync('redis-server', ['--version']).error !== undefined;
if (noRedis) console.warn('SKIPPED WhatsApp cluster test: redis-server is not installed');

const SECRET = 'wa-cluster-secret-0123456789';
let redis: RedisServer | undefined;
const h: Harness[] = [];

beforeAll(async () => {
  if (noRedis) return;
  redis = await startRedis();
  for (const id of ['gw-a', 'gw-b']) {
    const port = await freeTcpPort();
    // Media ports: the harness's leased range (a fixed 41000+ base sat in the ephemeral range).
    h.push(
      await startHarness({
        config: clusterConfig(id, port, redis.url, SECRET, API_TOKEN),
      }),
    );
  }
}, 60_000);
afterAll(async () => {
  await Promise.all(h.map((x) => x.stop()));
  await redis?.stop();
});

describe.skipIf(noRedis)('WhatsApp webhooks alternating between two instances', () => {
  it('offer to gw-a, later webhooks to gw-b: answered, audio both ways, listed by gw-b, ended by terminate sent to gw-b', async () => {
    const [a, b] = [h[0]!, h[1]!];
    const user = a.user('250788123456');
    await user.call();
    await waitFor(() => a.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 10_000, 'bridged on gw-a');
    const call = a.gw.ctx.registry.list()[0]!;
    expect(b.gw.ctx.registry.size).toBe(0);

    user.startSending((i) => tone(1000, 48000, 20, 8000, (2 * Math.PI * 1000 * i * 960) / 48000));
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 2000));
    const heard = a.sessions.get(call.id)!.heardPcm(25);
    expect(Math.abs(dominantFrequency(heard, 24000) - 1000)).toBeLessThan(20);
    const got = user.decodeReceived(t0 + 500);
    expect(Math.abs(dominantFrequency(got, 48000) - 440)).toBeLessThan(10);

    // gw-b lists gw-a's call.
    const listed = (await (
      await fetch(`http://127.0.0.1:${b.gw.httpPort}/v1/calls`, { headers: { authorization: `Bearer ${API_TOKEN}` } })
    ).json()) as { calls: { id: string }[] };
    expect(listed.calls.map((c) => c.id)).toEqual([call.id]);

    // The same offer redelivered to gw-b (Meta retrying elsewhere) is not answered a second time.
    (user.opts as { webhookUrl: string }).webhookUrl = b.webhookUrl;
    expect(await user.postWebhook(user.connectWebhook(await user.createOffer()))).toBe(200);
    // terminate delivered to the non-owner: forwarded, the owner ends the call as Meta's hangup.
    expect(await user.hangup()).toBe(200);
    await waitFor(() => call.ended, 5000, 'call ended on gw-a');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'terminate' });
    expect(b.gw.ctx.registry.size).toBe(0);
    expect(b.graph.byAction('pre_accept')).toHaveLength(0);
    // Meta ended it: nobody sends it a terminate back.
    expect(a.graph.byAction('terminate')).toHaveLength(0);
  });
});
