import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import type { SipFront } from '../../src/sip/front.js';
import { runSipp, SIPP_NUMS } from '../peers/sip/harness.js';
import { RtpEndpoint } from '../peers/sip/rtp-endpoint.js';
import { API_TOKEN, type Harness } from '../peers/whatsapp/harness.js';
import { toneSource } from '../peers/whatsapp/tones.js';
import { api, openUdpSockets, sleep, waitFor } from '../support/gateway.js';
import { expectBridgedTone, startSipWhatsAppHarness, type Cleanups } from './handoff-rig.js';

/**
 * A carrier caller (sipp, media at a test RTP endpoint) handed to a person on WhatsApp: the gateway
 * places a business-initiated call (Graph `connect` with our offer), the werift user answers, and
 * the legs are bridged G.711 A-law ⇄ Opus 48 kHz. A REJECTED status is a `rejected` outcome.
 */
const CALLER_HZ = 500;
const USER_HZ = 1300;
const PERSON = '250788000222';

let cleanups: Cleanups = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

async function rig(
  ringTimeoutSec = 10,
): Promise<{ h: Harness; caller: RtpEndpoint; call: Call; callerSipp: ReturnType<typeof runSipp> }> {
  const h = await startSipWhatsAppHarness(cleanups, {
    transfer: { allow: [`whatsapp:+${PERSON}`], mode: 'bridge', ringTimeoutSec },
    dialUri: 'sip:127.0.0.1:9',
  });
  const caller = new RtpEndpoint();
  caller.freq = CALLER_HZ;
  const rtpPort = await caller.start();
  cleanups.push(() => caller.stop());
  const front = (h.gw as unknown as { fronts: { name: string }[] }).fronts.find((f) => f.name === 'sip') as SipFront;
  const sipPort = (front.engine as unknown as { port: number }).port;
  const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
  const callerSipp = runSipp({
    scenario: 'uac-handoff.xml',
    target: `127.0.0.1:${sipPort}`,
    vars: { ...SIPP_NUMS, RTPPORT: String(rtpPort), REFER_STATUS: '403 Forbidden' },
    timeoutSec: 60,
  });
  cleanups.push(() => callerSipp);
  const call = await created;
  cleanups.push(() => call.end({ by: 'operator', cause: 'test_done' }));
  await waitFor(() => call.state === 'bridged', 8000, 'bridged to the AI');
  return { h, caller, call, callerSipp };
}

describe('SIP caller handed to a person on WhatsApp', () => {
  it('business-initiated call on transfer: G.711 ⇄ Opus both ways; the user terminate ends the call', async () => {
    const { h, caller, call, callerSipp } = await rig();
    const user = h.user(PERSON);
    const transfer = api(h.gw, API_TOKEN)('POST', `/v1/calls/${call.id}/transfer`, {
      destination: `whatsapp:+${PERSON}`,
    });
    const connect = await h.graph.waitFor('connect', undefined, 25_000); // after the AI's drain wait (a tone AI never drains)
    expect(connect.problems).toEqual([]);
    expect(connect.body.to).toBe(PERSON);
    const waCallId = String(connect.body.assigned_call_id);
    user.waCallId = waCallId;
    expect(await user.postStatus(waCallId, 'RINGING')).toBe(200);
    await user.answerBusinessCall((connect.body.session as { sdp: string }).sdp, waCallId);
    await user.waitConnected(20_000);
    user.startSending(toneSource(USER_HZ));

    const r = await transfer;
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ ok: true, outcome: 'bridged' });
    const talk = performance.now();
    await sleep(2500);

    const atUser = user.decodeReceived(talk + 300);
    expectBridgedTone(atUser, 48000, CALLER_HZ, 48000, 15);
    const atCaller = caller.audioSince(talk + 300);
    expectBridgedTone(atCaller, 8000, USER_HZ, 8000, 10);

    // The person hangs up on WhatsApp: the call ends (by the target) and the caller gets our BYE.
    expect(await user.hangup()).toBe(200);
    await waitFor(() => call.ended, 5000, 'call ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'terminate', party: 'target' });
    const res = await callerSipp;
    expect(res.code, res.errors + res.messages.slice(-2000)).toBe(0);
    expect(call.transfers).toMatchObject([{ destination: `whatsapp:+${PERSON}`, outcome: 'bridged' }]);
    expect(call.legs.map((l) => l.format.codec)).toEqual(['pcma', 'opus']);
    expect(h.graph.byAction('terminate').filter((t) => t.body.call_id === waCallId)).toEqual([]);
  }, 60_000);

  it('the user declines (REJECTED): the tool result says rejected and the caller is back with the AI', async () => {
    const { h, call } = await rig();
    const user = h.user(PERSON);
    const transfer = api(h.gw, API_TOKEN)('POST', `/v1/calls/${call.id}/transfer`, {
      destination: `whatsapp:+${PERSON}`,
    });
    const connect = await h.graph.waitFor('connect', undefined, 25_000); // after the AI's drain wait (a tone AI never drains)
    const waCallId = String(connect.body.assigned_call_id);
    expect(await user.postStatus(waCallId, 'REJECTED')).toBe(200);
    const r = await transfer;
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({ error: { code: 'transfer_failed', details: { outcome: 'rejected' } } });
    expect(call.transfers).toMatchObject([{ destination: `whatsapp:+${PERSON}`, outcome: 'rejected' }]);
    expect(call.ended).toBe(false);
    await waitFor(() => call.state === 'bridged' && call.legs.length === 1, 8000, 'back with the AI');
    // Meta ended it (the user declined): nothing is sent back.
    expect(h.graph.byAction('terminate').filter((t) => t.body.call_id === waCallId)).toEqual([]);
  }, 60_000);

  it('Graph answers 503 to the call-create: the tool result names it, the caller is back with the AI, nothing left', async () => {
    const { h, call } = await rig();
    const sockets = openUdpSockets();
    h.graph.inject('connect', { status: 503, code: 2, message: 'Service temporarily unavailable' });
    const r = await api(h.gw, API_TOKEN)('POST', `/v1/calls/${call.id}/transfer`, {
      destination: `whatsapp:+${PERSON}`,
    });
    expect(r.status).toBe(409);
    const err = (r.body as unknown as { error: { message: string; details: { outcome: string } } }).error;
    expect(err.details.outcome).toBe('failed');
    expect(err.message).toBe(
      `could not call whatsapp:+${PERSON}: WhatsApp call to +${PERSON} not placed: Graph connect failed: HTTP 503 (Meta 2: Service temporarily unavailable — Service temporarily unavailable)`,
    );
    expect(call.transfers).toMatchObject([{ outcome: 'failed' }]);
    await waitFor(() => call.state === 'bridged' && call.legs.length === 1, 8000, 'back with the AI');
    // No Meta call id came back: nothing to terminate; the offer's ICE socket and the slot are freed.
    expect(h.graph.byAction('terminate')).toEqual([]);
    expect(h.front.activeCount).toBe(0);
    await waitFor(() => openUdpSockets() <= sockets, 5000, 'ICE socket closed');
    expect(await h.gw.ctx.cluster.count('front:whatsapp')).toBe(0);
  }, 60_000);

  it('no webhook for the placed call within the ring time: signalling lost, Graph terminate, the caller is back with the AI', async () => {
    const { h, call } = await rig(5);
    const sockets = openUdpSockets();
    const transfer = api(h.gw, API_TOKEN)('POST', `/v1/calls/${call.id}/transfer`, {
      destination: `whatsapp:+${PERSON}`,
    });
    const connect = await h.graph.waitFor('connect', undefined, 25_000);
    const waCallId = String(connect.body.assigned_call_id);
    expect(await h.gw.ctx.cluster.count('front:whatsapp')).toBe(1); // the person's leg holds a slot meanwhile
    // "Meta" never sends RINGING, connect or terminate for it.
    const r = await transfer;
    expect(r.status).toBe(409);
    const err = (r.body as unknown as { error: { message: string; details: { outcome: string } } }).error;
    expect(err.details.outcome).toBe('failed');
    expect(err.message).toMatch(/no WhatsApp webhook .* call signalling lost/);
    // The call Meta may still be ringing is ended; later webhooks for it find nothing.
    const term = await h.graph.waitFor('terminate', waCallId, 5000);
    expect(term.problems).toEqual([]);
    expect(h.front.activeCount).toBe(0);
    await waitFor(() => call.state === 'bridged' && call.legs.length === 1, 8000, 'back with the AI');
    await waitFor(() => openUdpSockets() <= sockets, 5000, 'ICE socket closed');
    expect(await h.gw.ctx.cluster.count('front:whatsapp')).toBe(0);
    expect(call.transfers).toMatchObject([{ destination: `whatsapp:+${PERSON}`, outcome: 'failed' }]);
  }, 60_000);
});
