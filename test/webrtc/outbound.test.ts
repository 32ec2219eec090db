import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dominantFrequency, loudestToneDb, tone } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { GraphError } from '../../src/webrtc/graph.js';
import { API_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { opusSince } from '../peers/whatsapp/arrivals.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ freqFor: () => 440, mediaTimeoutSec: 5 });
});
afterAll(async () => {
  await h.stop();
});

describe('WhatsApp business-initiated calls', () => {
  it('places a call with our offer, bridges on the answer webhook, and terminates via Graph when the AI ends it', async () => {
    const user = h.user('250788777000');
    const call = await h.front.startOutboundCall({ to: '+250788777000' });
    expect(call.state).toBe('ringing');
    expect(call.info).toMatchObject({ front: 'whatsapp', direction: 'outbound', to: '+250788777000' });
    const connect = await h.graph.waitFor('connect');
    expect(connect.problems).toEqual([]);
    expect(connect.body.to).toBe('250788777000');
    const waCallId = String(connect.body.assigned_call_id);
    expect(call.info.externalId).toBe(waCallId);
    user.waCallId = waCallId;

    expect(await user.postStatus(waCallId, 'RINGING')).toBe(200);
    await user.answerBusinessCall((connect.body.session as { sdp: string }).sdp, waCallId);
    await user.waitConnected(20_000);
    await waitFor(() => call.state === 'bridged', 5000, 'bridged');
    expect(await user.postStatus(waCallId, 'ACCEPTED')).toBe(200);

    // The AI plays 440 Hz; the user plays 880 Hz.
    user.startSending((i) => tone(880, 48000, 20, 8000, (2 * Math.PI * 880 * i * 960) / 48000));
    const t0 = performance.now();
    const session = h.sessions.get(call.id)!;
    await waitFor(
      () => opusSince(user, t0 + 500) >= 60 && session.heardPcm(25).length >= 28800,
      15_000,
      '1.2 s of audio each way',
    );
    const heard = session.heardPcm(25);
    expect(Math.abs(dominantFrequency(heard, 24000) - 880) / 880).toBeLessThan(0.02);
    // Level over the frames that carry sound (a stalled sender is silence in the AI's real-time input).
    expect(loudestToneDb(heard, 24000, 880)).toBeGreaterThan(-18);
    const got = user.decodeReceived(t0 + 500);
    expect(Math.abs(dominantFrequency(got, 48000) - session.freq) / session.freq).toBeLessThan(0.02);
    expect(loudestToneDb(got, 48000, session.freq)).toBeGreaterThan(-18);

    // The AI ends the call: the gateway tells Meta (terminate), and everything is released.
    await call.end({ by: 'ai', cause: 'end_call' });
    const term = await h.graph.waitFor('terminate', waCallId, 3000);
    expect(term.problems).toEqual([]);
    expect(h.front.activeCount).toBe(0);
    expect(h.gw.ctx.registry.size).toBe(0);
  });

  it('ends the call when the user rejects it', async () => {
    const call = await h.front.startOutboundCall({ to: '250788777001' });
    const id = String(h.graph.byAction('connect').at(-1)!.body.assigned_call_id);
    expect(call.info.externalId).toBe(id);
    const user = h.user('250788777001');
    expect(await user.postStatus(id, 'REJECTED')).toBe(200);
    await waitFor(() => call.ended, 3000, 'ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'rejected' });
    expect(h.front.activeCount).toBe(0);
  });

  it("reports Meta's permission error clearly, directly and through the REST API", async () => {
    const permission = {
      status: 400,
      code: 138006,
      message: 'Lack of call request permission',
      details: 'No approved call permission from the recipient',
    };
    h.graph.inject('connect', permission);
    const err = (await h.front.startOutboundCall({ to: '250788777002' }).catch((e: unknown) => e)) as GraphError;
    expect(err).toBeInstanceOf(GraphError);
    expect(err.isPermissionError).toBe(true);
    expect(err.meta.details).toBe('No approved call permission from the recipient');
    expect(h.gw.ctx.registry.size).toBe(0);
    expect(h.front.activeCount).toBe(0);

    h.graph.inject('connect', permission);
    const res = await fetch(`http://127.0.0.1:${h.gw.httpPort}/v1/calls`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ front: 'whatsapp', to: '+250788777002' }),
    });
    const body = (await res.json()) as {
      error: { code: string; message: string; details?: { meta?: { code?: number; error_data?: unknown } } };
    };
    expect(res.status).toBe(502);
    // Meta's own fields reach the API caller unchanged, not only inside the message text.
    expect(body.error.details?.meta?.code).toBe(138006);
    expect(body.error.code).toBe('upstream');
    expect(body.error.message).toMatch(/138006/);
    expect(body.error.message).toMatch(/No approved call permission/);
  });
});
