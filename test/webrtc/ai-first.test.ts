import { afterEach, describe, expect, it } from 'vitest';
import { dominantFrequency } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { RealtimeTestServer } from '../peers/realtime/server.js';
import { startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { opusSince } from '../peers/whatsapp/arrivals.js';
import { toneSource } from '../peers/whatsapp/tones.js';

let h: Harness | undefined;
let rt: RealtimeTestServer | undefined;
afterEach(async () => {
  await h?.stop();
  await rt?.stop();
  h = rt = undefined;
});

/** A harness whose default route is OpenAI Realtime, served by the local Realtime stand-in. */
async function realtimeHarness(route: Record<string, unknown> = {}) {
  rt = new RealtimeTestServer();
  await rt.start();
  h = await startHarness({
    routes: {
      openai: { kind: 'realtime', url: rt.url, apiKey: 'sk-test-0123456789', connectTimeoutMs: 3000, ...route },
    },
    routing: { default: 'openai' },
  });
  return { rt, h };
}

describe('WhatsApp: the AI is ready before the caller is answered', () => {
  it('a 401 from the Realtime server: Graph reject, no accept, and the call ends naming the refusal', async () => {
    const { rt, h } = await realtimeHarness();
    rt.configure({ rejectWith: 401 });
    const user = h.user('250788100002');
    await user.call();
    const rej = await h.graph.waitFor('reject', user.waCallId, 8000);
    expect(rej.problems).toEqual([]);
    await waitFor(() => h.gw.ctx.registry.size === 0, 3000, 'call ended');
    await sleep(300);
    expect(h.graph.requests.map((r) => r.action)).toEqual(['pre_accept', 'reject']);
    expect(h.front.activeCount).toBe(0);
    const rec = h.gw.ctx.records.list({ limit: 1 })[0]!;
    expect(rec).toMatchObject({ endReason: { by: 'error', cause: 'ai_connect_failed' } });
    expect(String((rec.endReason as { detail: string }).detail)).toMatch(/401/);
  });

  it('onAiUnavailable: apologise — accept, a spoken apology, then Graph terminate', async () => {
    const { rt, h } = await realtimeHarness({ onAiUnavailable: 'apologise' });
    rt.configure({ rejectWith: 429 });
    const user = h.user('250788100003');
    await user.call();
    const accept = await h.graph.waitFor('accept', user.waCallId, 8000);
    const term = await h.graph.waitFor('terminate', user.waCallId, 15_000);
    expect(term.problems).toEqual([]);
    const spoken = user.loudArrivals().filter((t) => t > accept.perfAt && t < term.perfAt);
    expect(spoken.length).toBeGreaterThan(50); // over a second of speech
    expect(h.graph.byAction('reject')).toHaveLength(0);
    await waitFor(() => h.gw.ctx.registry.size === 0, 3000, 'call ended');
    const rec = h.gw.ctx.records.list({ limit: 1 })[0]!;
    expect(rec).toMatchObject({ endReason: { by: 'ai', cause: 'ai_unavailable' } });
  });

  it('outbound: the Realtime session is configured before Graph connect; a refused AI places no call', async () => {
    const { rt, h } = await realtimeHarness();
    const call = await h.front.startOutboundCall({ to: '+250788100004' });
    const connect = await h.graph.waitFor('connect');
    const updated = rt.connections[0]!.sent.find((e) => e.type === 'session.updated')!;
    expect(updated.at).toBeLessThan(connect.perfAt);
    expect(call.state).toBe('ringing');
    await call.end({ by: 'operator', cause: 'test' });

    rt.configure({ rejectWith: 401 });
    const err = await h.front.startOutboundCall({ to: '+250788100005' }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'ai_connect_failed' });
    expect((err as Error).message).toMatch(/401/);
    expect(h.graph.byAction('connect')).toHaveLength(1);
    await waitFor(() => h.gw.ctx.registry.size === 0, 3000, 'calls ended');
  });
});

describe('WhatsApp: Graph actions that may have reached Meta are never repeated', () => {
  it('a slow accept that succeeds late is not retried and the call stays up with audio both ways', async () => {
    h = await startHarness({ freqFor: () => 660, whatsapp: { graphTimeoutMs: 400 } });
    h.graph.fault('accept', { delayMs: 1500 });
    const user = h.user('250788100006');
    await user.call();
    await h.graph.waitFor('accept', user.waCallId);
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 5000, 'bridged');
    user.startSending(toneSource(1000));
    const t0 = performance.now();
    const session = () => h!.sessions.get(h!.gw.ctx.registry.list()[0]!.id)!;
    // 1.2 s each way (media may start late on a loaded box); by then the 400 ms Graph timeout is long past.
    await waitFor(
      () => opusSince(user, t0 + 300) >= 60 && session().heardPcm(25).length >= 28800,
      15_000,
      '1.2 s of audio each way',
    );
    expect(h.graph.byAction('accept')).toHaveLength(1);
    expect(h.graph.calls.get(user.waCallId)?.state).toBe('accepted'); // it did take effect at "Meta"
    expect(h.graph.byAction('terminate')).toHaveLength(0);
    const call = h.gw.ctx.registry.list()[0]!;
    expect(call.state).toBe('bridged');
    const got = user.decodeReceived(t0 + 300);
    expect(Math.abs(dominantFrequency(got, 48000) - 660)).toBeLessThan(13);
    const heard = h.sessions.get(call.id)!.heardPcm(25);
    expect(Math.abs(dominantFrequency(heard, 24000) - 1000)).toBeLessThan(20);
    expect(await user.hangup()).toBe(200);
    await waitFor(() => call.ended, 3000, 'ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'terminate' });
  });

  it('a connect whose response is lost is not sent again; the answer webhook is matched and audio bridges', async () => {
    h = await startHarness({ freqFor: () => 440 });
    h.graph.fault('connect', { loseResponse: true });
    const call = await h.front.startOutboundCall({ to: '+250788100007' });
    expect(call.state).toBe('ringing');
    expect(call.info.externalId).toBeUndefined();
    const connect = h.graph.byAction('connect')[0]!;
    const waCallId = String(connect.body.assigned_call_id);
    expect(connect.body.biz_opaque_callback_data).toBe(call.id);
    const user = h.user('250788100007');
    user.waCallId = waCallId;
    expect(await user.postStatus(waCallId, 'RINGING')).toBe(200);
    // Meta's answer carries the call id we never saw; matched to the attempt by the user's number.
    await user.answerBusinessCall((connect.body.session as { sdp: string }).sdp, waCallId);
    await user.waitConnected(20_000);
    await waitFor(() => call.state === 'bridged', 5000, 'bridged');
    expect(call.info.externalId).toBe(waCallId);
    user.startSending(toneSource(880));
    const t0 = performance.now();
    await waitFor(
      () => opusSince(user, t0 + 300) >= 50 && h!.sessions.get(call.id)!.heardPcm(25).length >= 24000,
      15_000,
      '1 s of audio each way',
    );
    const got = user.decodeReceived(t0 + 300);
    expect(Math.abs(dominantFrequency(got, 48000) - 440)).toBeLessThan(9);
    const heard = h.sessions.get(call.id)!.heardPcm(25);
    expect(Math.abs(dominantFrequency(heard, 24000) - 880)).toBeLessThan(18);
    expect(h.graph.byAction('connect')).toHaveLength(1);
    await call.end({ by: 'ai', cause: 'end_call' });
    const term = await h.graph.waitFor('terminate', waCallId, 3000);
    expect(term.problems).toEqual([]);
  });

  it('a lost connect response: the user rejecting is matched by the echoed opaque data and ends the call', async () => {
    h = await startHarness();
    h.graph.fault('connect', { loseResponse: true });
    const call = await h.front.startOutboundCall({ to: '+250788100008' });
    const connect = h.graph.byAction('connect')[0]!;
    const user = h.user('250788100008');
    const waCallId = String(connect.body.assigned_call_id);
    // A status carrying only the opaque data (no recipient): matched by biz_opaque_callback_data.
    const statuses = [{ id: waCallId, type: 'call', status: 'REJECTED', biz_opaque_callback_data: call.id }];
    const { callsEnvelope } = await import('../peers/whatsapp/user.js');
    expect(await user.postWebhook(callsEnvelope(h.graph.phoneNumberId, user.business, [], { statuses }))).toBe(200);
    await waitFor(() => call.ended, 3000, 'ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'rejected' });
    expect(h.front.activeCount).toBe(0);
  });

  it.each([true, false])(
    "Meta's terminate webhook after our own hang-up never ends an unconfirmed call to the same user (opaque echoed: %s)",
    async (echoOpaque) => {
      h = await startHarness();
      h.graph.echoOpaque = echoOpaque;
      const first = await h.front.startOutboundCall({ to: '+250788100009' });
      const firstId = first.info.externalId!;
      h.graph.fault('connect', { loseResponse: true });
      const second = await h.front.startOutboundCall({ to: '+250788100009' });
      expect(second.info.externalId).toBeUndefined();
      const secondId = String(h.graph.byAction('connect')[1]!.body.assigned_call_id);
      // We end the first call; Meta answers our terminate with its terminate webhook for it.
      await first.end({ by: 'operator', cause: 'api_hangup' });
      await h.graph.waitFor('terminate', firstId);
      expect((await h.graph.waitForWebhook(firstId)).result).toBe(200);
      // The next webhook (the second call ringing) is handled after it: once it has matched the second
      // call, the first one's terminate has been dealt with.
      const user = h.user('250788100009');
      expect(await user.postStatus(secondId, 'RINGING')).toBe(200);
      await waitFor(() => second.info.externalId !== undefined, 3000, 'second call confirmed');
      expect(second.info.externalId).toBe(secondId);
      expect(second.ended).toBe(false);
      expect(second.state).toBe('ringing');
      expect(h.graph.byAction('terminate')).toHaveLength(1);
    },
  );
});
