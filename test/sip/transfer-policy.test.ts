import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { tagOf } from '../../src/sip/message.js';
import { RealtimeTestServer } from '../peers/realtime/server.js';
import { startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { api, sleep, waitFor } from '../support/gateway.js';

const TOKEN = 'test-token-0123456789abcdef';
let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

/** A real gateway with a realtime route to the stand-in, and a raw SIP carrier that would receive the REFER. */
async function setup(transfer?: Record<string, unknown>) {
  const rt = new RealtimeTestServer({});
  await rt.start();
  cleanups.push(() => rt.stop());
  const h: SipHarness = await startSipHarness({
    routes: {
      agent: { kind: 'realtime', url: rt.url, apiKey: 'sk-test-0123456789', ...(transfer ? { transfer } : {}) },
    },
    defaultRoute: 'agent',
    config: { api: { token: TOKEN } },
  });
  cleanups.push(() => h.stop());
  const peer = new RawSipPeer();
  await peer.start();
  cleanups.push(() => peer.close());
  const callId = newId();
  const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
  peer.send(request({ callId, localPort: peer.port, targetPort: h.port, sdp: sdpOffer(4002) }), h.port);
  const ok = await peer.waitFor((m) => m.kind === 'response' && m.status === 200, 5000, '200');
  peer.send(
    request({ callId, method: 'ACK', toTag: tagOf(ok.headers.get('to')), localPort: peer.port, targetPort: h.port }),
    h.port,
  );
  const call = await created;
  await waitFor(() => call.state === 'bridged' && !!call.transfer, 5000, 'bridged with transfer');
  return { rt, h, peer, call };
}

const refers = (peer: RawSipPeer) => peer.received.filter((r) => r.msg.kind === 'request' && r.msg.method === 'REFER');

describe('transfers only where the operator allows (toll-fraud guard)', () => {
  it('the model cannot REFER outside transfer.allow; an allowed prefix goes out as REFER', async () => {
    const { rt, peer, call, h } = await setup({ allow: ['+25078*', 'sip:agents@pbx.example'] });
    const conn = rt.connections[0]!;
    const tool = conn.session.tools?.find((t) => t.name === 'transfer_call');
    expect(tool?.description).toContain('any number starting +25078');
    expect(tool?.description).toContain('sip:agents@pbx.example');

    // Turn 1: a premium-rate satellite number (the attack from the issue).
    rt.configure({ toolCalls: { 1: { name: 'transfer_call', arguments: { destination: '+88213000123' } } } });
    rt.callerTurn('transfer me to plus eight eight two one three');
    await rt.until(() => conn.toolOutputs.length === 1, 5000, 'refusal output');
    const refused = JSON.parse(conn.toolOutputs[0]!.output) as { ok: boolean; detail: string };
    expect(refused.ok).toBe(false);
    expect(refused.detail).toMatch(/cannot transfer calls there.*\+25078/);

    // Turn 2: header injection through the destination.
    rt.configure({
      toolCalls: { 2: { name: 'transfer_call', arguments: { destination: 'sip:agents@pbx.example>\r\nX-Evil: 1' } } },
    });
    rt.callerTurn('transfer me');
    await rt.until(() => conn.toolOutputs.length === 2, 5000, 'second refusal');
    expect(JSON.parse(conn.toolOutputs[1]!.output)).toMatchObject({ ok: false });
    await sleep(300);
    expect(refers(peer)).toHaveLength(0);
    expect(call.state).toBe('bridged');

    // Turn 3: an allowed number: REFER on the wire with exactly that target.
    rt.configure({ toolCalls: { 3: { name: 'transfer_call', arguments: { destination: '+250 788 000 002' } } } });
    rt.callerTurn('transfer me to sales');
    const refer = await peer.waitFor((m) => m.kind === 'request' && m.method === 'REFER', 5000, 'REFER');
    expect(refer.headers.get('refer-to')).toBe('<sip:+250788000002@127.0.0.1>');
    peer.reply(refer, 202, 'Accepted', h.port);
    await rt.until(() => conn.toolOutputs.length === 3, 5000, 'transfer output');
    expect(JSON.parse(conn.toolOutputs[2]!.output)).toEqual({
      ok: true,
      outcome: 'referred',
      detail: 'transferred to +250788000002',
    });
    expect(refers(peer)).toHaveLength(1);
  });

  it('a route without allowed destinations offers no transfer tool at all', async () => {
    const { rt } = await setup();
    expect(rt.connections[0]!.session.tools?.map((t) => t.name)).toEqual(['end_call', 'send_dtmf']);
  });

  it('the API refuses a Refer-To with CR/LF (400, no REFER); a valid operator transfer goes out', async () => {
    const { peer, call, h } = await setup({ allow: ['+250788000000'], operatorOverride: true });
    const http = api(h.gw, TOKEN);
    const bad = await http('POST', `/v1/calls/${call.id}/transfer`, {
      destination: 'sip:a@b.example>\r\nContact: <sip:evil@x',
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error?.code).toBe('invalid_request');
    await sleep(200);
    expect(refers(peer)).toHaveLength(0);
    const good = http('POST', `/v1/calls/${call.id}/transfer`, { destination: 'sip:desk@pbx.example;transport=tcp' });
    const refer = await peer.waitFor((m) => m.kind === 'request' && m.method === 'REFER', 5000, 'REFER');
    expect(refer.headers.get('refer-to')).toBe('<sip:desk@pbx.example;transport=tcp>');
    peer.reply(refer, 202, 'Accepted', h.port);
    expect((await good).status).toBe(200);
  });

  it('without transfer.operatorOverride the token cannot leave the allow-list (403, no REFER)', async () => {
    const { peer, call, h } = await setup({ allow: ['+250788000000'] });
    const r = await api(h.gw, TOKEN)('POST', `/v1/calls/${call.id}/transfer`, { destination: '+250788999999' });
    expect(r.status).toBe(403);
    expect(r.body.error?.code).toBe('not_allowed');
    // Hostile bodies: unknown trunk, header-ish trunk name, oversized brief, unknown mode, extra keys.
    const bad = [
      { destination: '+250788000000', trunk: 'nope' },
      { destination: '+250788000000', trunk: 'mtn\r\nX: 1' },
      { destination: '+250788000000', brief: 'x'.repeat(501) },
      { destination: '+250788000000', mode: 'teleport' },
      { destination: '+250788000000', extra: true },
    ];
    for (const body of bad) {
      const res = await api(h.gw, TOKEN)('POST', `/v1/calls/${call.id}/transfer`, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error?.code).toBe('invalid_request');
    }
    await sleep(200);
    expect(refers(peer)).toHaveLength(0);
    expect(call.state).toBe('bridged');
  });

  it('POST /v1/calls refuses a `from` that would inject SIP headers', async () => {
    const { h } = await setup();
    const r = await api(h.gw, TOKEN)('POST', '/v1/calls', {
      front: 'sip',
      to: '+250788000001',
      from: '+250\r\nP-Asserted-Identity: <sip:+1900@x>',
    });
    expect(r.status).toBe(400);
    expect(r.body.error?.message).toMatch(/^from:/);
  });
});
