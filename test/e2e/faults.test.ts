import { type ChildProcess } from 'node:child_process';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { CallRecordStore } from '../../src/api/records.js';
import { waitFor } from '../support/gateway.js';
import { placeCall, startGatewayProcess } from '../support/gateway-process.js';
import { RawSipPeer } from '../peers/sip/udp-peer.js';

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
  const g = await startGatewayProcess({ token: TOKEN, drainSec, preload: ['./test/support/fault-hook.ts'] });
  child = g.proc;
  return g;
}

describe('faults in a real gateway process', () => {
  it('an uncaught exception BYEs the live call, writes its record and exits non-zero', async () => {
    const g = await startProcess(30);
    peer = new RawSipPeer();
    await peer.start();
    const sipCallId = await placeCall(peer, g.sipPort, 4200, 8000);
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
    await placeCall(peer, h.sipPort, 4300, 8000);
    h.proc.kill('SIGTERM');
    await waitFor(() => h.log().includes('draining active calls'), 5000, 'drain started');
    const t0 = Date.now();
    h.proc.kill('SIGTERM');
    expect(await h.exited).toBe(130);
    expect(Date.now() - t0).toBeLessThan(5000);
  }, 90_000);
});
