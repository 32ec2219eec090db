import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/core/logger.js';
import { GraphClient, GraphError } from '../../src/webrtc/graph.js';
import { GraphStub } from '../peers/whatsapp/graph-stub.js';
import { WhatsAppUser } from '../peers/whatsapp/user.js';
import { waitFor } from '../support/gateway.js';

let graph: GraphStub;
beforeAll(async () => {
  graph = new GraphStub();
  await graph.start();
});
afterAll(async () => {
  await graph.stop();
});

/** A logger that keeps every warn (one per failed attempt) so a test can count attempts. */
function recordingLog(): { log: Logger; warns: Record<string, unknown>[] } {
  const warns: Record<string, unknown>[] = [];
  const log = {
    warn: (o: Record<string, unknown>) => warns.push(o),
    info: () => undefined,
    debug: () => undefined,
    child: () => log,
  } as unknown as Logger;
  return { log, warns };
}

const client = (baseUrl: string, log: Logger, timeoutMs = 2000) =>
  new GraphClient({
    baseUrl,
    version: 'v23.0',
    accessToken: graph.accessToken,
    log,
    attempts: 3,
    backoffMs: 10,
    timeoutMs,
  });

/** A port nothing listens on (connection refused). */
async function closedPort(): Promise<number> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe('Graph client: only requests that provably never reached Meta are repeated', () => {
  it('connection refused: accept and connect are retried (never sent), and fail as not_sent', async () => {
    const { log, warns } = recordingLog();
    const calls = client(`http://127.0.0.1:${await closedPort()}`, log).forNumber('1');
    const err = (await calls.accept('wacid.x', 'v=0\r\n', 'call-1').catch((e: unknown) => e)) as GraphError;
    expect(err).toBeInstanceOf(GraphError);
    expect(err.outcome).toBe('not_sent');
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(warns.map((w) => [w.action, w.outcome, w.retry])).toEqual([
      ['accept', 'not_sent', true],
      ['accept', 'not_sent', true],
      ['accept', 'not_sent', false],
    ]);
    const c = (await calls.connect('250788000001', 'v=0\r\n').catch((e: unknown) => e)) as GraphError;
    expect(c.outcome).toBe('not_sent');
    expect(warns).toHaveLength(6);
  });

  it('a timed-out connect is sent once (it may have rung the user) and fails as unknown', async () => {
    const { log, warns } = recordingLog();
    graph.fault('connect', { delayMs: 800 });
    const calls = client(graph.baseUrl, log, 300).forNumber(graph.phoneNumberId);
    // The simulated user's offer is WhatsApp-shaped, so the stand-in takes it as our offer.
    const peer = new WhatsAppUser({ webhookUrl: 'http://127.0.0.1:1/', appSecret: 'x', graph, number: '1' });
    const offer = await peer.createOffer();
    await peer.close();
    const n0 = graph.byAction('connect').length;
    const err = (await calls.connect('250788000003', offer, 'call-2').catch((e: unknown) => e)) as GraphError;
    expect(err.code).toBe('timeout');
    expect(err.outcome).toBe('unknown');
    expect(warns).toHaveLength(1);
    // The stand-in finishes the delayed connect 800 ms in (later on a loaded box): wait for it to ring.
    // A retry would have followed the 300 ms timeout at once, so by then it would be counted.
    const rang = () => {
      const m = graph.byAction('connect').slice(n0)[0];
      return m !== undefined && graph.calls.get(String(m.body.assigned_call_id))?.state === 'ringing';
    };
    await waitFor(rang, 10_000, 'the late connect to ring');
    const made = graph.byAction('connect').slice(n0);
    expect(made).toHaveLength(1);
    expect(made[0]!.problems).toEqual([]);
    expect(graph.calls.get(String(made[0]!.body.assigned_call_id))?.state).toBe('ringing'); // it did ring
  });

  it('a 5xx on accept or connect is not repeated; on terminate it is; Meta’s refusals are final', async () => {
    const { log, warns } = recordingLog();
    const calls = client(graph.baseUrl, log).forNumber(graph.phoneNumberId);
    graph.offered('wacid.five');
    graph.inject('accept', { status: 500, code: 2, message: 'Service temporarily unavailable', times: 3 });
    const err = (await calls.accept('wacid.five', 'v=0\r\n').catch((e: unknown) => e)) as GraphError;
    expect([err.httpStatus, err.outcome]).toEqual([500, 'unknown']);
    expect(graph.byAction('accept', 'wacid.five')).toHaveLength(1);
    graph.inject('connect', { status: 503, code: 2, message: 'Service temporarily unavailable' });
    const n0 = graph.byAction('connect').length;
    expect(await calls.connect('250788000002', 'v=0\r\n').catch((e: GraphError) => e.outcome)).toBe('unknown');
    expect(graph.byAction('connect').length - n0).toBe(1);
    expect(warns.every((w) => w.retry === false)).toBe(true);
    graph.errors.clear();

    // Per-call state at the stand-in: the first terminate works, a second one and an unknown call fail.
    graph.offered('wacid.done');
    await calls.terminate('wacid.done');
    const again = (await calls.terminate('wacid.done').catch((e: unknown) => e)) as GraphError;
    expect([again.httpStatus, again.meta.code, again.outcome]).toEqual([400, 100, 'refused']);
    expect(again.meta.details).toMatch(/call is terminated/);
    const unknown = (await calls.reject('wacid.never').catch((e: unknown) => e)) as GraphError;
    expect(unknown.meta.details).toMatch(/not found/);
    expect(graph.byAction('terminate', 'wacid.done')).toHaveLength(2);
  });

  it('Meta’s documented refusals reach the caller intact: bad token 401/190, foreign number 100/33, out-of-order actions 100', async () => {
    const { log, warns } = recordingLog();
    const bad = new GraphClient({ baseUrl: graph.baseUrl, version: 'v23.0', accessToken: 'expired', log, attempts: 3 });
    const auth = (await bad
      .forNumber(graph.phoneNumberId)
      .terminate('wacid.x')
      .catch((e: unknown) => e)) as GraphError;
    expect([auth.httpStatus, auth.meta.code, auth.meta.type, auth.outcome]).toEqual([
      401,
      190,
      'OAuthException',
      'refused',
    ]);
    expect(auth.meta.fbtraceId).toMatch(/^A/);
    const foreign = (await client(graph.baseUrl, log)
      .forNumber('999999999')
      .terminate('wacid.x')
      .catch((e: unknown) => e)) as GraphError;
    expect([foreign.httpStatus, foreign.meta.code, foreign.meta.subcode]).toEqual([400, 100, 33]);
    expect(warns.every((w) => w.retry === false)).toBe(true);

    const calls = client(graph.baseUrl, log).forNumber(graph.phoneNumberId);
    const peer = new WhatsAppUser({ webhookUrl: 'http://127.0.0.1:9/', appSecret: 'x', graph, number: '1' });
    const offer = await peer.createOffer();
    await peer.close();
    // pre_accept is optional: accept straight from the offer is fine; accept after terminate is not.
    graph.offered('wacid.direct');
    const answerOf = offer.replace('a=setup:actpass', 'a=setup:active');
    await calls.accept('wacid.direct', answerOf);
    expect(graph.calls.get('wacid.direct')?.state).toBe('accepted');
    const twice = (await calls.accept('wacid.direct', answerOf).catch((e: unknown) => e)) as GraphError;
    expect(twice.meta.details).toMatch(/Cannot accept call wacid.direct: call is accepted/);
    await calls.terminate('wacid.direct');
    const late = (await calls.preAccept('wacid.direct', answerOf).catch((e: unknown) => e)) as GraphError;
    expect([late.httpStatus, late.meta.code]).toEqual([400, 100]);
    expect(late.meta.details).toMatch(/call is terminated/);
  });
});
