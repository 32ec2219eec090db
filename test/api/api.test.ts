import { Validator } from '@seriousme/openapi-schema-validator';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CallRecordStore } from '../../src/api/records.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Gateway } from '../../src/gateway.js';
import { frames, tone } from '../support/audio.js';
import { api, simulatedCall, startTestGateway, TEST_TOKEN, waitFor } from '../support/gateway.js';

let gw: Gateway;
beforeEach(async () => {
  gw = await startTestGateway();
});
afterEach(async () => {
  await gw.stop('test_done', 0);
});

const pcmu = createCodec(PCMU_8K);

describe('REST API auth and documentation', () => {
  it('refuses requests without a token or with a bad one (401, JSON error)', async () => {
    for (const token of [null, 'wrong-token-0123456789', `${TEST_TOKEN}x`]) {
      const r = await api(gw, token)('GET', '/v1/calls');
      expect(r.status).toBe(401);
      expect(r.body.error?.code).toBe('unauthorized');
    }
    expect((await api(gw)('GET', '/v1/calls')).status).toBe(200);
  });

  it('serves a valid OpenAPI 3 document that covers every endpoint', async () => {
    const r = await api(gw, null)('GET', '/v1/openapi.json');
    expect(r.status).toBe(200);
    const result = await new Validator().validate(r.body as Parameters<Validator['validate']>[0]);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    const paths = Object.keys((r.body as { paths: object }).paths);
    for (const p of [
      '/v1/calls',
      '/v1/calls/{id}',
      '/v1/calls/{id}/transfer',
      '/v1/calls/{id}/say',
      '/v1/calls/{id}/mute',
      '/v1/calls/{id}/events',
      '/v1/sessions/start',
      '/v1/sessions/{callId}/stop',
    ]) {
      expect(paths).toContain(p);
    }
  });

  it('with no token configured the API is not open: a generated token is needed (see local-access.test.ts)', async () => {
    const open = await startTestGateway({ api: {} });
    try {
      const r = await api(open, null)('GET', '/v1/calls');
      expect(r.status).toBe(401);
      expect(r.body.error?.code).toBe('unauthorized');
    } finally {
      await open.stop('test_done', 0);
    }
  });
});

describe('call control on a live simulated call', () => {
  it('lists and shows calls with legs, codecs, route, levels and transcript; filters by front', async () => {
    const { call } = await simulatedCall(gw, { trunk: 'mtn-rwanda' });
    await waitFor(() => call.transcript.length > 0, 10_000, 'greeting transcript');
    const call2 = await simulatedCall(gw, { front: 'api' });
    const all = await api(gw)('GET', '/v1/calls');
    expect((all.body.calls as unknown[]).length).toBe(2);
    const onlyTest = await api(gw)('GET', '/v1/calls?front=test&state=bridged');
    expect((onlyTest.body.calls as { id: string }[]).map((c) => c.id)).toEqual([call.id]);
    const one = await api(gw)('GET', `/v1/calls/${call.id}`);
    expect(one.body).toMatchObject({ id: call.id, state: 'bridged', route: 'local', front: 'test' });
    expect((one.body.legs as { codec: string }[])[0]!.codec).toBe('pcmu/8000');
    expect((one.body.transcript as { role: string }[])[0]!.role).toBe('ai');
    expect((await api(gw)('GET', '/v1/calls?state=nonsense')).status).toBe(400);
    expect((await api(gw)('GET', '/v1/calls/nope')).status).toBe(404);
    await call2.call.end({ by: 'gateway', cause: 'test_done' });
  });

  it('DELETE hangs up with the reason, and the call record is then served with ended=true', async () => {
    const { call, leg } = await simulatedCall(gw);
    const r = await api(gw)('DELETE', `/v1/calls/${call.id}`, { reason: 'fraud check' });
    expect(r.status).toBe(200);
    expect(r.body.endReason).toEqual({ by: 'operator', cause: 'api_hangup', detail: 'fraud check' });
    expect(leg.closedWith?.cause).toBe('api_hangup');
    const ended = await api(gw)('GET', '/v1/calls?ended=true');
    expect((ended.body.calls as { id: string }[]).map((c) => c.id)).toContain(call.id);
    const rec = await api(gw)('GET', `/v1/calls/${call.id}`);
    expect(rec.body.state).toBe('ended');
    expect((await api(gw)('DELETE', `/v1/calls/${call.id}`)).status).toBe(404);
    expect((await api(gw)('DELETE', `/v1/calls/${call.id}`, { reason: 5 })).status).toBe(400);
  });

  it('transfer uses the front transfer, or says clearly that the front cannot; the allow-list binds the token', async () => {
    const g = await startTestGateway({
      routes: { local: { kind: 'local', greeting: 'Hello caller.', transfer: { allow: ['+250788999999'] } } },
    });
    try {
      const { call } = await simulatedCall(g);
      const no = await api(g)('POST', `/v1/calls/${call.id}/transfer`, { destination: '+250788999999' });
      expect(no.status).toBe(409);
      expect(no.body.error?.message).toMatch(/not supported for test calls/);
      const outside = await api(g)('POST', `/v1/calls/${call.id}/transfer`, { destination: '+250788111111' });
      expect(outside.status).toBe(403);
      expect(outside.body.error?.code).toBe('not_allowed');
      const seen: string[] = [];
      call.transfer = async (d) => void seen.push(d);
      const yes = await api(g)('POST', `/v1/calls/${call.id}/transfer`, { destination: '+250788999999' });
      expect(yes.status).toBe(200);
      expect(yes.body).toMatchObject({ ok: true, outcome: 'referred' });
      expect(seen).toEqual(['+250788999999']);
      expect((await api(g)('POST', `/v1/calls/${call.id}/transfer`, {})).status).toBe(400);
      const badMode = await api(g)('POST', `/v1/calls/${call.id}/transfer`, {
        destination: '+250788999999',
        mode: 'teleport',
      });
      expect(badMode.status).toBe(400);
    } finally {
      await g.stop('test_done', 0);
    }
  });

  it('say makes the AI speak (transcript + audio to the caller); mute stops caller audio to the AI', async () => {
    const { call, leg } = await simulatedCall(gw);
    const bridge = call.media!.bridge;
    await waitFor(() => bridge.playout.empty && call.transcript.length === 1, 10_000, 'greeting');
    const before = bridge.stats.framesToLeg;
    expect((await api(gw)('POST', `/v1/calls/${call.id}/say`, { text: 'Your balance is five dollars.' })).status).toBe(
      200,
    );
    await waitFor(() => call.transcript.some((t) => t.text === 'Your balance is five dollars.'), 10_000, 'say');
    await waitFor(() => bridge.stats.framesToLeg > before + 25, 10_000, 'spoken audio');
    // Mute: frames stop flowing to the AI even while the caller talks.
    expect((await api(gw)('POST', `/v1/calls/${call.id}/mute`, { muted: true })).status).toBe(200);
    // Synchronised on the leg: once the bridge has pulled every fed frame, each was sent or held back.
    const toAi = bridge.stats.framesToAi;
    leg.feed(frames(tone(1000, 8000, 400), 160).map((f) => pcmu.encode(f)));
    await waitFor(() => leg.inbound.length === 0, 5000, 'muted frames pulled');
    expect(bridge.stats.framesToAi).toBe(toAi);
    expect((await api(gw)('POST', `/v1/calls/${call.id}/mute`, { muted: false })).status).toBe(200);
    const unmutedFrom = bridge.stats.framesToAi;
    leg.feed(frames(tone(1000, 8000, 400), 160).map((f) => pcmu.encode(f)));
    await waitFor(() => leg.inbound.length === 0, 5000, 'unmuted frames pulled');
    expect(bridge.stats.framesToAi - unmutedFrom).toBeGreaterThanOrEqual(20);
    expect((await api(gw)('POST', `/v1/calls/${call.id}/mute`, { muted: 'yes' })).status).toBe(400);
  });

  it('POST /v1/calls validates, refuses fronts that cannot dial, and uses the front dialer', async () => {
    const bad = await api(gw)('POST', '/v1/calls', { front: 'fax', to: 'x' });
    expect(bad.status).toBe(400);
    expect(bad.body.error?.message).toMatch(/front/);
    const broken = await api(gw)('POST', '/v1/calls', undefined, '{"front":');
    expect(broken.status).toBe(400);
    expect(broken.body.error?.code).toBe('invalid_json');
    const none = await api(gw)('POST', '/v1/calls', { front: 'whatsapp', to: '+250788123456' });
    expect(none.status).toBe(501);
    gw.ctx.dialers.set('whatsapp', async (req) => (await simulatedCall(gw, { front: 'whatsapp', to: req.to })).call);
    const ok = await api(gw)('POST', '/v1/calls', { front: 'whatsapp', to: '+250788123456', route: 'local' });
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ front: 'whatsapp', to: '+250788123456', state: 'bridged' });
    expect((await api(gw)('POST', '/v1/calls', { front: 'whatsapp', to: '+250788123456', route: 'nope' })).status).toBe(
      400,
    );
  });

  it('streams a call’s transcript, state and quality as Server-Sent Events', async () => {
    const { call, leg } = await simulatedCall(gw);
    const res = await fetch(`http://127.0.0.1:${gw.httpPort}/v1/calls/${call.id}/events`, {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = res.body!.getReader();
    let text = '';
    const dec = new TextDecoder();
    // Caller speaks: the echo agent produces caller + AI transcript entries.
    leg.feed(frames(tone(800, 8000, 500), 160).map((f) => pcmu.encode(f)));
    const t0 = Date.now();
    while (!/event: transcript[\s\S]*"role":"caller"/.test(text) || !text.includes('event: quality')) {
      if (Date.now() - t0 > 15_000) throw new Error(`no transcript event; got ${text.slice(0, 300)}`);
      const { value } = await reader.read();
      text += dec.decode(value);
    }
    expect(text).toMatch(/event: snapshot/);
    await call.end({ by: 'remote', cause: 'bye' });
    while (!text.includes('event: ended')) text += dec.decode((await reader.read()).value);
    expect(text).toMatch(/event: ended\ndata: .*"cause":"bye"/);
  });

  it('metrics change as calls run and end', async () => {
    // One listener (no ops.port): /metrics is behind the token like the API.
    expect((await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).status).toBe(401);
    const scrape = async () =>
      (
        await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } })
      ).text();
    const { call } = await simulatedCall(gw);
    expect(await scrape()).toMatch(/gateway_active_calls\{front="test",state="bridged"\} 1/);
    await waitFor(() => call.media!.bridge.stats.framesToAi > 0, 2000, 'a caller frame through the bridge');
    await call.end({ by: 'remote', cause: 'bye' });
    const after = await scrape();
    expect(after).toMatch(/gateway_calls_total\{front="test",trunk="",route="local",outcome="bye"\} 1/);
    expect(after).toMatch(/gateway_call_setup_seconds_count\{front="test"\} 1/);
    expect(after).toMatch(/gateway_added_latency_seconds_count [1-9]/);
    expect(after).not.toMatch(/gateway_active_calls\{front="test",state="bridged"\} 1/);
  });

  it('health and readiness', async () => {
    expect((await api(gw, null)('GET', '/healthz')).body).toMatchObject({ status: 'ok' });
    const ready = await api(gw, null)('GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toMatchObject({ http: true, config: true });
  });
});

describe('graceful shutdown', () => {
  it('drains: refuses new work, waits for the active call, then ends it and keeps its record', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-records-'));
    const path = join(dir, 'calls.sqlite');
    const g = await startTestGateway({ records: { path } });
    const { call } = await simulatedCall(g);
    const stopping = g.stop('shutdown', 500);
    await waitFor(() => g.ctx.draining, 2000, 'draining');
    expect((await api(g)('POST', '/v1/calls', { front: 'sip', to: '+250788123456' })).status).toBe(503);
    expect((await api(g, null)('GET', '/readyz')).status).toBe(503);
    expect(call.state).toBe('bridged'); // still running during the drain window
    await stopping;
    expect(call.endReason).toEqual({ by: 'gateway', cause: 'shutdown' });
    const store = new CallRecordStore(path);
    expect(store.get(call.id)).toMatchObject({ id: call.id, state: 'ended', endReason: { cause: 'shutdown' } });
    store.close();
  });
});
