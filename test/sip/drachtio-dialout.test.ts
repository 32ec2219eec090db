import { createSocket } from 'node:dgram';
import { describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency, toneLevelDb } from '../support/audio.js';
import { api, sleep, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { useDrachtioRig } from '../peers/drachtio/gateway.js';
import { drachtioUnavailable, freePort } from '../peers/drachtio/server.js';
import { runSipp } from '../peers/sip/harness.js';

const skip = !!drachtioUnavailable();

const rig = useDrachtioRig({ hz: 700, ms: 3000 });

/** Resolves once something (sipp) holds the UDP port. */
async function bound(port: number): Promise<void> {
  await waitFor(() => true, 10);
  for (let i = 0; i < 100; i++) {
    const free = await new Promise<boolean>((res) => {
      const u = createSocket('udp4');
      u.once('error', () => res(false));
      u.bind(port, '127.0.0.1', () => u.close(() => res(true)));
    });
    if (!free) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on UDP ${port}`);
}

describe.skipIf(skip)('dial-out through a real drachtio-server (createUAC)', () => {
  it('POST /v1/calls {front: sip}: sipp answers, its 700 Hz reaches the AI, RTP flows back, DELETE sends BYE', async () => {
    const phonePort = await freePort();
    const h = await rig.start({
      config: { api: { token: TEST_TOKEN } },
      trunks: [
        {
          name: 'lab',
          allow: ['127.0.0.2/32'],
          countryCode: '250',
          nationalPrefix: '0',
          dialUri: `sip:127.0.0.1:${phonePort}`,
        },
      ],
    });
    expect(h.gw.ctx.legDialer).toBe(h.front.dialer);
    const sipp = runSipp({
      scenario: 'uas-answer-audio.xml',
      target: '127.0.0.1:5060', // unused by a UAS
      vars: { PCAP: rig.pcap },
      args: ['-p', String(phonePort)],
      timeoutSec: 30,
    });
    await bound(phonePort);
    const call = api(h.gw);
    const placed = await call('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'lab' });
    expect(placed.status, JSON.stringify(placed.body)).toBe(201);
    const c: Call = h.gw.ctx.registry.get(placed.body.id as string)!;
    expect(c.info).toMatchObject({ front: 'sip', direction: 'outbound', trunk: 'lab', to: '+250788123456' });
    await waitFor(() => c.state === 'bridged', 10_000, 'outbound call bridged');
    await sleep(2000);
    const atAi = h.sessions.get(c.id)!.heardPcm(10);
    expect(atAi.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(atAi, 8000) - 700) / 700).toBeLessThan(0.02);
    expect(toneLevelDb(atAi, 8000, 700)).toBeGreaterThan(-20);

    const hung = await call('DELETE', `/v1/calls/${c.id}`, { reason: 'test over' });
    expect(hung.status).toBe(200);
    const res = await sipp;
    expect(res.code, res.errors + res.stderr).toBe(0);
    // The INVITE left drachtio-server for the trunk's dialUri with the number as user part.
    expect(res.messages).toMatch(new RegExp(`INVITE sip:\\+250788123456@127\\.0\\.0\\.1:${phonePort} SIP/2\\.0`));
    expect(res.messages).toMatch(/BYE sip:sipp@127\.0\.0\.1/);
    expect(c.info.externalId).toMatch(/\S+/);
    expect(c.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
    const q = Object.values(c.quality)[0] as { packetsSent: number; packetsReceived: number };
    expect(q.packetsSent).toBeGreaterThan(80); // the AI's audio went out to the phone
    expect(q.packetsReceived).toBeGreaterThan(80);
    await waitFor(() => h.front.ports.used === 0 && h.front.dialer!.activeCount === 0, 3000, 'ports released');
  });

  it('a refused dial-out ends with the status; an unanswered one is CANCELled when deleted', async () => {
    const phonePort = await freePort(); // nothing there at first: then sipp refuses with 486
    const h = await rig.start({
      config: { api: { token: TEST_TOKEN } },
      trunks: [{ name: 'lab', allow: ['127.0.0.2/32'], countryCode: '250', dialUri: `sip:127.0.0.1:${phonePort}` }],
    });
    const call = api(h.gw);
    const sipp = runSipp({
      scenario: 'uas-busy-then-ring.xml',
      target: '127.0.0.1:5060',
      args: ['-p', String(phonePort)],
      calls: 2,
      timeoutSec: 30,
    });
    await bound(phonePort);
    const busy = await call('POST', '/v1/calls', { front: 'sip', to: '+250788000486' });
    const b = h.gw.ctx.registry.get(busy.body.id as string)!;
    await waitFor(() => b.ended, 5000, 'busy call ended');
    expect(b.endReason).toMatchObject({ by: 'remote', cause: 'rejected' });
    expect(b.endReason?.detail).toMatch(/486 Busy Here/);

    const ringing = await call('POST', '/v1/calls', { front: 'sip', to: '+250788000001' });
    const r = h.gw.ctx.registry.get(ringing.body.id as string)!;
    await sleep(500);
    expect(r.state).toBe('ringing');
    await call('DELETE', `/v1/calls/${r.id}`, {});
    const res = await sipp;
    expect(res.code, res.errors + res.stderr).toBe(0);
    expect(res.messages).toMatch(/CANCEL sip:\+250788000001@/);
    expect(r.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
    await waitFor(() => h.front.ports.used === 0 && h.front.dialer!.activeCount === 0, 3000, 'ports released');
  });
});
