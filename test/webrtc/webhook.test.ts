import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testLogger } from '../../src/core/logger.js';
import { GraphClient, GraphError } from '../../src/webrtc/graph.js';
import { parseCallEvents, validSignature } from '../../src/webrtc/webhook.js';
import { waitFor } from '../support/gateway.js';
import { APP_SECRET, VERIFY_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { callsEnvelope, signBody } from '../peers/whatsapp/user.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.stop();
});

const terminateCall = (id: string, status: unknown) => ({
  id,
  from: '250788000111',
  to: '15550783881',
  event: 'terminate',
  direction: 'USER_INITIATED',
  timestamp: '1735900000',
  status,
  duration: 42,
});

describe('WhatsApp webhook endpoint', () => {
  it('answers the subscription handshake only with the right verify token', async () => {
    const url = (token: string) =>
      `${h.webhookUrl}?hub.mode=subscribe&hub.verify_token=${encodeURIComponent(token)}&hub.challenge=1158201444`;
    const ok = await fetch(url(VERIFY_TOKEN));
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe('1158201444');
    expect((await fetch(url('wrong-token'))).status).toBe(403);
    expect((await fetch(`${h.webhookUrl}?hub.verify_token=${VERIFY_TOKEN}&hub.challenge=1`)).status).toBe(403);
  });

  it('acts only on deliveries signed over the raw body with the app secret', async () => {
    const user = h.user('250788000100');
    const body = user.connectWebhook(await user.createOffer());
    const before = h.graph.requests.length;
    expect(await user.postWebhook(body, { signature: null })).toBe(401); // missing
    expect(await user.postWebhook(body, { signature: 'sha256=' + '0'.repeat(64) })).toBe(401); // wrong
    expect(await user.postWebhook(body, { signature: 'sha1=abc' })).toBe(401); // wrong scheme
    expect(await user.postWebhook(body, { tamper: true })).toBe(401); // signed, then body changed
    // Signed with another secret.
    expect(await user.postWebhook(body, { signature: signBody(JSON.stringify(body), 'not-the-secret') })).toBe(401);
    // A refused delivery is refused before anything is queued (events run only after a 200): no wait needed.
    expect(h.graph.requests.length).toBe(before);
    expect(h.gw.ctx.registry.size).toBe(0);
    // Re-serialising changes the bytes: a signature is over the exact raw body, not the JSON value.
    const raw = JSON.stringify(body, null, 2);
    expect(validSignature(Buffer.from(raw), signBody(JSON.stringify(body), APP_SECRET), APP_SECRET)).toBe(false);
    expect(validSignature(Buffer.from(raw), signBody(raw, APP_SECRET), APP_SECRET)).toBe(true);

    // Correctly signed: acted on (pre_accept sent), and a redelivery of the same offer is ignored.
    const created: string[] = [];
    const onCreated = (c: { id: string }) => created.push(c.id);
    h.gw.ctx.registry.on('created', onCreated);
    expect(await user.postWebhook(body)).toBe(200);
    expect(await user.postWebhook(body)).toBe(200);
    await h.graph.waitFor('pre_accept', user.waCallId, 5000);
    // Deliveries are handled in order: once the later terminate has ended the call, the redelivery
    // before it has been dealt with (a second call would have been created synchronously).
    await user.hangup();
    await waitFor(() => h.gw.ctx.registry.size === 0, 5000, 'call ended');
    h.gw.ctx.registry.off('created', onCreated);
    expect(created).toHaveLength(1);
    expect(h.graph.byAction('pre_accept', user.waCallId)).toHaveLength(1);
  });

  it('answers 200 at once and ignores bodies it cannot use', async () => {
    const raw =
      '{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"calls","value":{"calls":[{"id":5}]}}]}]}';
    for (const body of [raw, 'not json', '{}']) {
      const res = await fetch(h.webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-hub-signature-256': signBody(body, APP_SECRET) },
        body,
      });
      expect(res.status).toBe(200);
    }
    expect(h.gw.ctx.registry.size).toBe(0);
  });
});

describe('calls webhook parsing', () => {
  it('reads connect offers, business answers, terminate (string or array status) and statuses', () => {
    const evs = parseCallEvents(
      callsEnvelope(
        '1065',
        '15550783881',
        [
          {
            id: 'wacid.A',
            from: '250788000111',
            to: '15550783881',
            event: 'connect',
            direction: 'USER_INITIATED',
            session: { sdp_type: 'offer', sdp: 'v=0\r\n' },
          },
          {
            id: 'wacid.B',
            from: '15550783881',
            to: '250788000111',
            event: 'connect',
            direction: 'BUSINESS_INITIATED',
            connection: { webrtc: { sdp: 'v=0\r\nanswer' } },
          },
          terminateCall('wacid.C', ['FAILED']),
          terminateCall('wacid.D', 'completed'),
          { id: 'wacid.E', event: 'connect' }, // no SDP: dropped
        ],
        {
          contacts: [{ profile: { name: 'Ama' }, wa_id: '250788000111' }],
          statuses: [{ id: 'wacid.B', type: 'call', status: 'RINGING' }],
        },
      ),
    );
    expect(evs).toEqual([
      expect.objectContaining({
        kind: 'connect',
        waCallId: 'wacid.A',
        sdpType: 'offer',
        callerName: 'Ama',
        phoneNumberId: '1065',
      }),
      expect.objectContaining({ kind: 'connect', waCallId: 'wacid.B', sdpType: 'answer', sdp: 'v=0\r\nanswer' }),
      expect.objectContaining({ kind: 'terminate', waCallId: 'wacid.C', status: 'FAILED', durationSec: 42 }),
      expect.objectContaining({ kind: 'terminate', waCallId: 'wacid.D', status: 'COMPLETED' }),
      expect.objectContaining({ kind: 'status', waCallId: 'wacid.B', status: 'RINGING' }),
    ]);
    expect(parseCallEvents(null)).toEqual([]);
    expect(parseCallEvents({ entry: [{ changes: [{ field: 'messages', value: {} }] }] })).toEqual([]);
  });
});

describe('Graph API client', () => {
  const client = (attempts = 3, timeoutMs = 2000) =>
    new GraphClient({
      baseUrl: h.graph.baseUrl,
      version: h.graph.version,
      accessToken: h.graph.accessToken,
      log: testLogger(),
      attempts,
      backoffMs: 20,
      timeoutMs,
    }).forNumber(h.graph.phoneNumberId);

  it('retries 5xx and 429 with backoff, then succeeds', async () => {
    h.graph.inject('terminate', { status: 503, code: 2, message: 'Service temporarily unavailable', times: 1 });
    h.graph.inject('reject', { status: 429, code: 80007, message: 'Rate limit', times: 2 });
    const n0 = h.graph.requests.length;
    h.graph.offered('wacid.retry1');
    h.graph.offered('wacid.retry2');
    await client().terminate('wacid.retry1');
    await client().reject('wacid.retry2');
    const made = h.graph.requests.slice(n0).map((r) => r.action);
    expect(made).toEqual(['terminate', 'terminate', 'reject', 'reject', 'reject']);
    expect(h.graph.requests.slice(n0).every((r) => r.problems.length === 0)).toBe(true);
  });

  it("does not retry 4xx and carries Meta's code, message and details", async () => {
    h.graph.inject('connect', {
      status: 400,
      code: 138006,
      message: 'No approved call permission from the recipient',
      details: 'Business initiated calling needs user permission',
    });
    const n0 = h.graph.requests.length;
    const err = await client()
      .connect('250788000999', 'v=0\r\n')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GraphError);
    const g = err as GraphError;
    expect(g.code).toBe('upstream');
    expect(g.httpStatus).toBe(400);
    expect(g.meta).toMatchObject({ code: 138006, message: 'No approved call permission from the recipient' });
    expect(g.meta.details).toBe('Business initiated calling needs user permission');
    expect(g.isPermissionError).toBe(true);
    expect(g.message).toMatch(/138006/);
    expect(h.graph.requests.length - n0).toBe(1);
  });

  it('times out a Graph that never answers and gives up after the attempts', async () => {
    const hang = createServer(() => {}); // accepts, never responds
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
    const slow = new GraphClient({
      baseUrl: `http://127.0.0.1:${(hang.address() as AddressInfo).port}`,
      version: 'v23.0',
      accessToken: 't',
      log: testLogger(),
      attempts: 2,
      backoffMs: 10,
      timeoutMs: 300,
    }).forNumber('1');
    const t0 = Date.now();
    const err = (await slow.terminate('wacid.x', 'call-1').catch((e: unknown) => e)) as GraphError;
    expect(err).toBeInstanceOf(GraphError);
    expect(err.code).toBe('timeout');
    expect(err.callId).toBe('call-1');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
    hang.closeAllConnections();
    await new Promise((r) => hang.close(r));
  });
});
