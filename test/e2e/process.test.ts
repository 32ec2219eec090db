import { type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { CallRecordStore } from '../../src/api/records.js';
import { waitFor } from '../support/gateway.js';
import { placeCall, startGatewayProcess } from '../support/gateway-process.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';

const TOKEN = 'process-test-token-0123456789';

let child: ChildProcess | undefined;
let peer: RawSipPeer | undefined;
afterEach(() => {
  child?.kill('SIGKILL');
  peer?.close();
});

describe('the gateway as `npm start` runs it (real process, real SIP, real API)', () => {
  it('serves a carrier call, hangs it up from the API, and on SIGTERM drains, BYEs and keeps every record', async () => {
    const g = await startGatewayProcess({ token: TOKEN, drainSec: 1 });
    child = g.proc;
    const { httpPort, sipPort, records } = g;
    expect(g.log()).toMatch(/"front":"sip".*"msg":"front listening"/);

    peer = new RawSipPeer();
    await peer.start();
    const p = peer;
    const api = (method: string, path: string, body?: unknown) =>
      fetch(`http://127.0.0.1:${httpPort}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: body ? JSON.stringify(body) : undefined,
      });
    const byeFor = async (callId: string, timeoutMs: number) => {
      const bye = await p.waitFor(
        (m) => m.kind === 'request' && m.method === 'BYE' && m.headers.get('call-id') === callId,
        timeoutMs,
        'BYE',
      );
      p.reply(bye, 200, 'OK', sipPort);
      return bye;
    };

    // 1. A carrier call shows up in the API with its trunk and E.164 numbers; DELETE sends BYE.
    const first = await placeCall(p, sipPort, 4100, 5000);
    let listed: { calls: { id: string; trunk: string; from: string; externalId: string }[] } = { calls: [] };
    for (let i = 0; i < 50 && listed.calls.length === 0; i++) {
      listed = (await (await api('GET', '/v1/calls?front=sip')).json()) as typeof listed;
      if (!listed.calls.length) await new Promise((r) => setTimeout(r, 100));
    }
    expect(listed.calls[0]).toMatchObject({ trunk: 'mtn-rwanda', from: '+250788123456', externalId: first });
    expect((await api('DELETE', `/v1/calls/${listed.calls[0]!.id}`, { reason: 'ops test' })).status).toBe(200);
    await byeFor(first, 5000);

    // 2. A second call is up when SIGTERM arrives: new calls are refused, the call gets BYE after the drain.
    const second = await placeCall(p, sipPort, 4102, 5000);
    g.proc.kill('SIGTERM');
    await waitFor(() => g.log().includes('draining active calls'), 5000, 'drain log');
    const refusedId = newId();
    p.send(request({ callId: refusedId, localPort: p.port, targetPort: sipPort, sdp: sdpOffer(4104) }), sipPort);
    const refused = await p.waitFor(
      (m) => m.kind === 'response' && m.status >= 300 && m.headers.get('call-id') === refusedId,
      3000,
      'refusal',
    );
    expect(refused.kind === 'response' && refused.status).toBe(503);
    await byeFor(second, 8000);
    expect(await g.exited).toBe(0);

    const store = new CallRecordStore(records);
    const recs = store.list();
    store.close();
    expect(recs.map((r) => r.externalId).sort()).toEqual([first, second].sort());
    expect(recs.find((r) => r.externalId === first)!.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
    expect(recs.find((r) => r.externalId === second)!.endReason).toMatchObject({ by: 'gateway', cause: 'shutdown' });
  }, 90_000);
});
