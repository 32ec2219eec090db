import { leasePortRange } from '../support/ports.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CallRecordStore } from '../../src/api/records.js';
import { tagOf } from '../../src/sip/message.js';
import { freeTcpPort, freeUdpPort } from '../support/free-ports.js';
import { waitFor } from '../support/gateway.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';

const TOKEN = 'fault-test-token-0123456789';

let child: ChildProcess | undefined;
let peer: RawSipPeer | undefined;
afterEach(() => {
  child?.kill('SIGKILL');
  peer?.close();
  child = peer = undefined;
});

/** The gateway as `npm start` runs it, with the test fault hook preloaded. */
async function startProcess(drainSec: number) {
  const [httpPort, sipPort] = await Promise.all([freeTcpPort(), freeUdpPort()]);
  const [rtpBase] = leasePortRange(100);
  const records = join(mkdtempSync(join(tmpdir(), 'gw-fault-')), 'calls.sqlite');
  let out = '';
  const proc = spawn(process.execPath, ['--import', 'tsx', '--import', './test/support/fault-hook.ts', 'src/main.ts'], {
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
      GW__SHUTDOWN__DRAIN_SEC: String(drainSec),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = proc;
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  await waitFor(() => out.includes('gateway ready'), 40_000, 'gateway ready log');
  return { proc, httpPort, sipPort, records, exited, log: () => out };
}

async function placeCall(p: RawSipPeer, sipPort: number, rtpPort: number): Promise<string> {
  const callId = newId();
  p.send(request({ callId, localPort: p.port, targetPort: sipPort, sdp: sdpOffer(rtpPort) }), sipPort);
  const ok = await p.waitFor(
    (m) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId,
    8000,
    '200',
  );
  p.send(
    request({ callId, method: 'ACK', toTag: tagOf(ok.headers.get('to')), localPort: p.port, targetPort: sipPort }),
    sipPort,
  );
  // Datagrams are handled in order: once an OPTIONS sent after the ACK is answered, the call is confirmed.
  const probe = newId();
  p.send(request({ callId: probe, method: 'OPTIONS', localPort: p.port, targetPort: sipPort }), sipPort);
  await p.waitFor((m) => m.kind === 'response' && m.headers.get('call-id') === probe, 8000, 'OPTIONS after the ACK');
  return callId;
}

describe('faults in a real gateway process', () => {
  it('an uncaught exception BYEs the live call, writes its record and exits non-zero', async () => {
    const g = await startProcess(30);
    peer = new RawSipPeer();
    await peer.start();
    const sipCallId = await placeCall(peer, g.sipPort, 4200);
    g.proc.kill('SIGUSR2');
    const bye = await peer.waitFor(
      (m) => m.kind === 'request' && m.method === 'BYE' && m.headers.get('call-id') === sipCallId,
      8000,
      'BYE after the fault',
    );
    peer.reply(bye, 200, 'OK', g.sipPort);
    expect(await g.exited).toBe(70);
    expect(g.log()).toMatch(/uncaught exception: ending all calls and exiting/);
    const store = new CallRecordStore(g.records);
    const recs = store.list();
    store.close();
    expect(recs.map((r) => r.externalId)).toEqual([sipCallId]);
    expect(recs[0]!.endReason).toMatchObject({ by: 'gateway', cause: 'fatal_error' });
  }, 90_000);

  it('SIGTERM exits with a dashboard SSE stream connected; a second SIGTERM does not wait for the drain', async () => {
    const g = await startProcess(0);
    const stream = await new Promise<IncomingMessage>((resolve, reject) =>
      httpRequest(
        { host: '127.0.0.1', port: g.httpPort, path: '/v1/events', headers: { authorization: `Bearer ${TOKEN}` } },
        resolve,
      )
        .on('error', reject)
        .end(),
    );
    expect(stream.statusCode).toBe(200);
    stream.resume();
    const streamClosed = new Promise<void>((r) => stream.on('close', () => r()));
    g.proc.kill('SIGTERM');
    expect(await g.exited).toBe(0);
    await streamClosed;

    // Drain of 60 s with a call up: the second SIGTERM ends the process at once.
    const h = await startProcess(60);
    peer = new RawSipPeer();
    await peer.start();
    await placeCall(peer, h.sipPort, 4300);
    h.proc.kill('SIGTERM');
    await waitFor(() => h.log().includes('draining active calls'), 5000, 'drain started');
    const t0 = Date.now();
    h.proc.kill('SIGTERM');
    expect(await h.exited).toBe(130);
    expect(Date.now() - t0).toBeLessThan(5000);
  }, 90_000);
});
