import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebRtcLeg } from '../../src/webrtc/webrtc-leg.js';
import { waitFor } from '../support/gateway.js';
import { API_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';

let h: Harness | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await h?.stop();
  h = undefined;
});

const post = (path: string, body: unknown) =>
  fetch(`http://127.0.0.1:${h!.gw.httpPort}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('WhatsApp caps (limits.maxCalls)', () => {
  it('inbound: with whatsapp = 2, two calls are taken and the third is rejected through Graph', async () => {
    h = await startHarness({ config: { limits: { maxCalls: { whatsapp: 2 } } } });
    const users = ['250788100001', '250788100002', '250788100003'].map((n) => h!.user(n));
    await users[0]!.call();
    await users[1]!.call();
    await waitFor(() => h!.gw.ctx.registry.size === 2, 5000, 'two calls');
    const third = users[2]!;
    expect(await third.postWebhook(third.connectWebhook(await third.createOffer()))).toBe(200);
    const reject = await h.graph.waitFor('reject', third.waCallId, 5000);
    expect(reject.problems).toEqual([]);
    expect(h.graph.byAction('pre_accept')).toHaveLength(2);
    expect(h.gw.ctx.registry.size).toBe(2);
    // A slot frees when a call ends.
    await users[0]!.hangup();
    await waitFor(() => h!.gw.ctx.registry.size === 1, 5000, 'one call left');
    const fourth = h.user('250788100004');
    await fourth.call();
    expect(h.graph.byAction('pre_accept')).toHaveLength(3);
  });

  it('dial-out: with whatsappOutbound = 2, the third POST /v1/calls is refused 503 and Meta is never asked', async () => {
    h = await startHarness({ config: { limits: { maxCalls: { whatsappOutbound: 2 } } } });
    const statuses = [];
    for (const to of ['+250788200001', '+250788200002', '+250788200003'])
      statuses.push((await post('/v1/calls', { front: 'whatsapp', to })).status);
    expect(statuses).toEqual([201, 201, 503]);
    expect(h.graph.byAction('connect')).toHaveLength(2);
    expect(h.gw.ctx.registry.size).toBe(2);
  });

  it('media sessions: with mediaSessions = 1, the second /v1/sessions/start is refused 503', async () => {
    h = await startHarness({ config: { limits: { maxCalls: { mediaSessions: 1 } } } });
    const start = async (n: string) =>
      post('/v1/sessions/start', {
        callId: `ext-${n}`,
        sdpOffer: await h!.user(n).createOffer(),
        fromNumber: n,
        toNumber: '15550783881',
      });
    const first = await start('250788300001');
    expect(first.status).toBe(201);
    const second = await start('250788300002');
    expect(second.status).toBe(503);
    expect(((await second.json()) as { error: { code: string } }).error.code).toBe('limit_reached');
    expect(h.gw.ctx.registry.size).toBe(1);
  });
});

describe('WhatsApp set-up leaks', () => {
  it('a throw in WebRtcLeg.offer does not leave a call ringing in the registry', async () => {
    h = await startHarness();
    vi.spyOn(WebRtcLeg, 'offer').mockRejectedValueOnce(new Error('no UDP port free'));
    const r = await post('/v1/calls', { front: 'whatsapp', to: '+250788400001' });
    expect(r.status).toBe(500);
    expect(h.gw.ctx.registry.size).toBe(0);
    const record = (await h.gw.ctx.records.list({ front: 'whatsapp' }))[0];
    expect(record?.endReason).toMatchObject({ by: 'error', cause: 'setup_failed' });
  });

  it('a call ended while Graph connect is in flight is terminated with Meta once connect returns', async () => {
    h = await startHarness();
    const release = h.graph.hold('connect');
    const placing = h.front.startOutboundCall({ to: '+250788400002' });
    // The AI is prepared before connect goes out: end the call only once connect is at "Meta".
    await waitFor(() => h!.graph.heldNow.has('connect'), 5000, 'connect in flight');
    const call = h.gw.ctx.registry.list()[0]!;
    await call.end({ by: 'operator', cause: 'api_hangup' });
    release();
    await placing;
    const connect = h.graph.byAction('connect')[0]!;
    const term = await h.graph.waitFor('terminate', String(connect.body.assigned_call_id), 5000);
    expect(term.problems).toEqual([]);
    expect(h.gw.ctx.registry.size).toBe(0);
    expect(h.front.activeCount).toBe(0);
  });
});
