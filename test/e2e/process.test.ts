import { leasePortRange } from '../support/ports.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CallRecordStore } from '../../src/api/records.js';
import { tagOf } from '../../src/sip/message.js';
import { waitFor } from '../support/gateway.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { freeUdpPort } from '../support/free-ports.js';
import { freeTcpPort } from '../support/free-ports.js';

const TOKEN = 'process-test-token-0123456789';

let child: ChildProcess | undefined;
let peer: RawSipPeer | undefined;
afterEach(() => {
  child?.kill('SIGKILL');
  peer?.close();
});

describe('the gateway as `npm start` runs it (real process, real SIP, real API)', () => {
  it('serves a carrier call, hangs it up from the API, and on SIGTERM drains, BYEs and keeps every record', async () => {
    const [httpPort, sipPort] = await Promise.all([freeTcpPort(), freeUdpPort()]);
    const [rtpBase] = leasePortRange(100);
    const records = join(mkdtempSync(join(tmpdir(), 'gw-proc-')), 'calls.sqlite');
    let out = '';
    child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      env: {
        ...process.env,
        LOG_LEVEL: 'info',
        API_TOKEN: TOKEN,
        GW__HTTP__HOST: '127.0.0.1',
        GW__HTTP__PORT: String(httpPort),
        GW__SIP__HOST: '127.0.0.1',
        GW__SIP__PORT: String(sipPort),
        GW__SIP__RTP_PORT_MIN: String(rtpBase),
        GW__SIP__RTP_PORT_MAX: String(rtpBase + 99),
        GW__RECORDS__PATH: records,
        GW__SHUTDOWN__DRAIN_SEC: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes('gateway ready'), 40_000, 'gateway ready log'); // slow start on a busy box
    expect(out).toMatch(/"front":"sip".*"msg":"front listening"/);

    peer = new RawSipPeer();
    await peer.start();
    const p = peer;
    const api = (method: string, path: string, body?: unknown) =>
      fetch(`http://127.0.0.1:${httpPort}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: body ? JSON.stringify(body) : undefined,
      });
    const placeCall = async (rtpPort: number) => {
      const callId = newId();
      p.send(request({ callId, localPort: p.port, targetPort: sipPort, sdp: sdpOffer(rtpPort) }), sipPort);
      const ok = await p.waitFor(
        (m) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId,
        5000,
        '200',
      );
      p.send(
        request({ callId, method: 'ACK', toTag: tagOf(ok.headers.get('to'))!, localPort: p.port, targetPort: sipPort }),
        sipPort,
      );
      // Datagrams are handled in order: once an OPTIONS sent after the ACK is answered, the call is confirmed.
      const probe = newId();
      p.send(request({ callId: probe, method: 'OPTIONS', localPort: p.port, targetPort: sipPort }), sipPort);
      await p.waitFor((m) => m.kind === 'response' && m.headers.get('call-id') === probe, 5000, 'OPTIONS after ACK');
      return callId;
    };
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
    const first = await placeCall(4100);
    let listed: { calls: { id: string; trunk: string; from: string; externalId: string }[] } = { calls: [] };
    for (let i = 0; i < 50 && listed.calls.length === 0; i++) {
      listed = (await (await api('GET', '/v1/calls?front=sip')).json()) as typeof listed;
      if (!listed.calls.length) await new Promise((r) => setTimeout(r, 100));
    }
    expect(listed.calls[0]).toMatchObject({ trunk: 'mtn-rwanda', from: '+250788123456', externalId: first });
    expect((await api('DELETE', `/v1/calls/${listed.calls[0]!.id}`, { reason: 'ops test' })).status).toBe(200);
    await byeFor(first, 5000);

    // 2. A second call is up when SIGTERM arrives: new calls are refused, the call gets BYE after the drain.
    const second = await placeCall(4102);
    const exited = new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    await waitFor(() => out.includes('draining active calls'), 5000, 'drain log');
    const refusedId = newId();
    p.send(request({ callId: refusedId, localPort: p.port, targetPort: sipPort, sdp: sdpOffer(4104) }), sipPort);
    const refused = await p.waitFor(
      (m) => m.kind === 'response' && m.status >= 300 && m.headers.get('call-id') === refusedId,
      3000,
      'refusal',
    );
    expect(refused.kind === 'response' && refused.status).toBe(503);
    await byeFor(second, 8000);
    expect(await exited).toBe(0);

    const store = new CallRecordStore(records);
    const recs = store.list();
    store.close();
    expect(recs.map((r) => r.externalId).sort()).toEqual([first, second].sort());
    expect(recs.find((r) => r.externalId === first)!.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
    expect(recs.find((r) => r.externalId === second)!.endReason).toMatchObject({ by: 'gateway', cause: 'shutdown' });
  }, 90_000);
});
