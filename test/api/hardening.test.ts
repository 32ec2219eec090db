import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway.js';
import { api, simulatedCall, startTestGateway, TEST_TOKEN, waitFor } from '../support/gateway.js';

let gw: Gateway | undefined;
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await gw?.stop('test_done', 0);
  gw = undefined;
});

const OPENAI_SIP_ROUTE = {
  kind: 'openai-sip',
  projectId: 'proj_test',
  webhookSecret: 'whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=',
  apiKey: 'sk-test-0123456789',
  apiBaseUrl: 'http://127.0.0.1:9/v1',
  sideband: false,
};

/** Raw TCP: write `text`, collect everything the server sends until it closes the connection. */
function rawExchange(port: number, text: string): { socket: Socket; closed: Promise<string> } {
  const socket = connect(port, '127.0.0.1');
  sockets.push(socket);
  let got = '';
  socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
  socket.on('error', () => {});
  socket.write(text);
  return { socket, closed: new Promise((r) => socket.on('close', () => r(got))) };
}

function get(port: number, path: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers, agent: false }, resolve);
    req.on('error', reject);
    req.end();
  });
}

describe('public HTTP listener hardening', () => {
  it('a webhook body that trickles in is cut by the request timeout (408, connection closed)', async () => {
    gw = await startTestGateway({
      http: { host: '127.0.0.1', port: 0, requestTimeoutMs: 600, headersTimeoutMs: 600 },
      routes: { local: { kind: 'local' }, osip: OPENAI_SIP_ROUTE },
    });
    const t0 = Date.now();
    const { closed } = rawExchange(
      gw.httpPort,
      'POST /webhooks/openai/osip HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n{"a":',
    );
    const reply = await closed;
    expect(reply).toMatch(/^HTTP\/1\.1 408/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    // Headers that never finish are cut the same way.
    const slowHeaders = rawExchange(gw.httpPort, 'POST /webhooks/openai/osip HTTP/1.1\r\nHost: x\r\n');
    expect(await slowHeaders.closed).toMatch(/^HTTP\/1\.1 408/);
  });

  it('a webhook declaring an oversized body is refused (413) before it is read or verified', async () => {
    gw = await startTestGateway({
      http: { host: '127.0.0.1', port: 0, maxWebhookBytes: 4096 },
      routes: { local: { kind: 'local' }, osip: OPENAI_SIP_ROUTE },
    });
    const rejections = () => gw!.ctx.metrics.webhookRejections.get();
    const before = JSON.stringify(await rejections());
    const { closed } = rawExchange(
      gw.httpPort,
      'POST /webhooks/openai/osip HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n',
    );
    expect(await closed).toMatch(/^HTTP\/1\.1 413/);
    // No signature work happened (the signature-failure counter did not move).
    expect(JSON.stringify(await rejections())).toBe(before);
  });

  it('the token is accepted only in the Authorization header: ?access_token= is refused', async () => {
    gw = await startTestGateway();
    expect((await api(gw, null)('GET', `/v1/calls?access_token=${TEST_TOKEN}`)).status).toBe(401);
    const sse = await get(gw.httpPort, `/v1/events?access_token=${TEST_TOKEN}`);
    expect(sse.statusCode).toBe(401);
    sse.resume();
  });

  it('dashboard cookie: exchanged once for the token, HttpOnly, serves GET and SSE, never a mutation', async () => {
    gw = await startTestGateway();
    const base = `http://127.0.0.1:${gw.httpPort}`;
    expect((await fetch(`${base}/v1/auth/session`, { method: 'POST' })).status).toBe(401);
    const ex = await fetch(`${base}/v1/auth/session`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(ex.status).toBe(204);
    const setCookie = ex.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/^gw_ops=[A-Za-z0-9_-]{43}; Path=\/v1; HttpOnly; SameSite=Strict; Max-Age=28800$/);
    expect(setCookie).not.toContain(TEST_TOKEN);
    const cookie = setCookie.split(';')[0]!;
    expect((await fetch(`${base}/v1/calls`, { headers: { cookie } })).status).toBe(200);
    expect((await fetch(`${base}/v1/calls`, { headers: { cookie: 'gw_ops=forged' } })).status).toBe(401);
    const { call } = await simulatedCall(gw);
    // A cross-site form would carry the cookie: it must not be able to hang up.
    const del = await fetch(`${base}/v1/calls/${call.id}`, { method: 'DELETE', headers: { cookie } });
    expect(del.status).toBe(401);
    expect(call.ended).toBe(false);
    const stream = await get(gw.httpPort, '/v1/events', { cookie });
    expect(stream.statusCode).toBe(200);
    expect(stream.headers['content-type']).toBe('text/event-stream');
    stream.destroy();
    // Logging out forgets the session.
    await fetch(`${base}/v1/auth/session`, { method: 'DELETE', headers: { cookie } });
    expect((await fetch(`${base}/v1/calls`, { headers: { cookie } })).status).toBe(401);
  });

  it('500 SSE clients against a cap of 40: exactly 40 streams, 460 answered 503', async () => {
    gw = await startTestGateway({ api: { token: TEST_TOKEN, sseMaxClients: 40 } });
    const auth = { authorization: `Bearer ${TEST_TOKEN}` };
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const responses = await Promise.all(Array.from({ length: 500 }, () => get(gw!.httpPort, '/v1/events', auth)));
    await new Promise((r) => setTimeout(r, 50)); // process warnings are emitted on a later tick
    process.off('warning', onWarning);
    // 40 streams each listening on the registry are expected, not a leak to warn the operator about.
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message)).toEqual([]);
    const statuses = responses.map((r) => r.statusCode);
    expect(statuses.filter((s) => s === 200)).toHaveLength(40);
    expect(statuses.filter((s) => s === 503)).toHaveLength(460);
    const refused = responses.find((r) => r.statusCode === 503)!;
    expect(refused.headers['retry-after']).toBe('10');
    for (const r of responses) r.destroy();
    // Closed streams free their slots.
    const hub = (gw as unknown as { sse: { size: number } }).sse;
    await waitFor(() => hub.size === 0, 5000, 'streams closed');
    const again = await get(gw.httpPort, '/v1/events', auth);
    expect(again.statusCode).toBe(200);
    again.destroy();
  });

  it('an SSE consumer that stops reading is dropped once its backlog passes the bound', async () => {
    gw = await startTestGateway({ api: { token: TEST_TOKEN, sseMaxBufferedBytes: 64 * 1024 } });
    const { call } = await simulatedCall(gw);
    const slow = connect(gw.httpPort, '127.0.0.1');
    sockets.push(slow);
    slow.on('error', () => {});
    slow.write(`GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_TOKEN}\r\n\r\n`);
    slow.pause(); // never reads: the kernel buffers fill, then the gateway's backlog grows
    const hub = (gw as unknown as { sse: { size: number } }).sse;
    await waitFor(() => hub.size === 1, 5000, 'stream open');
    const text = 'x'.repeat(16 * 1024);
    for (let i = 0; i < 2000 && hub.size > 0; i++) {
      call.addTranscript({ role: 'ai', text, at: Date.now() });
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => hub.size === 0, 5000, 'slow stream dropped');
  });

  it('ops listener apart: public port serves webhooks and health only; ops port has /v1 and /metrics', async () => {
    gw = await startTestGateway({ ops: { host: '127.0.0.1', port: 0 } });
    expect(gw.opsPort).not.toBe(gw.httpPort);
    const auth = { authorization: `Bearer ${TEST_TOKEN}` };
    for (const path of ['/metrics', '/v1/calls', '/', '/v1/openapi.json']) {
      const r = await get(gw.httpPort, path, auth);
      r.resume();
      expect([path, r.statusCode]).toEqual([path, 404]);
    }
    const health = await fetch(`http://127.0.0.1:${gw.httpPort}/healthz`);
    expect(await health.json()).toEqual({ status: 'ok' }); // no call counts on the public side
    expect((await fetch(`http://127.0.0.1:${gw.opsPort}/metrics`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${gw.opsPort}/v1/calls`, { headers: auth })).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${gw.opsPort}/v1/calls`)).status).toBe(401);
  });

  it('drain closes open SSE streams, so stop() completes with a dashboard connected', async () => {
    gw = await startTestGateway();
    const stream = await get(gw.httpPort, '/v1/events', { authorization: `Bearer ${TEST_TOKEN}` });
    expect(stream.statusCode).toBe(200);
    const ended = new Promise<void>((r) => stream.on('close', () => r()));
    stream.resume();
    await gw.stop('test_done', 0);
    gw = undefined;
    await ended;
  });
});
