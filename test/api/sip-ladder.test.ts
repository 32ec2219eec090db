import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallView } from '../../src/api/call-view.js';
import { freeSipPort } from '../support/free-ports.js';
import { sippCall, sippPhone, startSipHarness, type SipHarness, usePcapDir } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { api, TEST_TOKEN, waitFor } from '../support/gateway.js';

/**
 * The call detail's SIP ladder is complete in the stored record: the 200 to our own BYE (the
 * record waits for it, bounded), and the messages of calls we place (dial-out), whose SIP Call-ID
 * the engine picks.
 */
const pcapDir = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1500)));

let h: SipHarness;
let phonePort: number;
beforeAll(async () => {
  phonePort = await freeSipPort();
  h = await startSipHarness({
    config: { api: { token: TEST_TOKEN } },
    trunks: [
      { name: 'mtn-rwanda', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', maxCalls: 60 },
      {
        name: 'lab',
        allow: ['127.0.0.2/32'],
        countryCode: '250',
        nationalPrefix: '0',
        dialUri: `sip:127.0.0.1:${phonePort}`,
      },
    ],
  });
});
afterAll(async () => {
  await h?.stop();
});

/** `> BYE`, `< 200 OK (BYE)`: each ladder message with its direction as the console draws it. */
const ladderOf = (v: CallView) => v.signalling.map((m) => `${m.direction === 'out' ? '>' : '<'} ${m.summary}`);

/** The stored record, read back through the API the detail page uses (the call is no longer live). */
async function storedView(id: string): Promise<CallView> {
  await waitFor(() => !!h.gw.ctx.records.get(id) && !h.gw.ctx.registry.get(id), 5000, 'the call record');
  const res = await api(h.gw)('GET', `/v1/calls/${id}`);
  expect(res.status).toBe(200);
  return res.body as CallView;
}

function expectInOrder(ladder: string[], order: string[]): void {
  const at = order.map((m) => ladder.indexOf(m));
  expect(
    at.every((i) => i >= 0),
    ladder.join(', '),
  ).toBe(true);
  expect(
    [...at].sort((a, b) => a - b),
    ladder.join(', '),
  ).toEqual(at);
}

describe('SIP ladder in the call record', () => {
  it('an inbound call hung up from the console: INVITE, 200, ACK, BYE and the 200 to our BYE, in order', async () => {
    const { call, sipp } = await sippCall(h, 'uac-gateway-bye.xml', join(pcapDir(), 'pcma-1000.pcap'));
    await waitFor(() => call.state === 'bridged', 10_000, 'bridged');
    expect((await api(h.gw)('DELETE', `/v1/calls/${call.id}`, { reason: 'operator (console)' })).status).toBe(200);
    const res = await sipp;
    expect(res.code, res.errors).toBe(0);
    const ladder = ladderOf(await storedView(call.id));
    expectInOrder(ladder, ['< INVITE', '> 200 OK (INVITE)', '< ACK', '> BYE', '< 200 OK (BYE)']);
    expect(ladder[0]).toBe('< INVITE');
    expect(ladder.at(-1)).toBe('< 200 OK (BYE)');
  });

  it('a dial-out call (POST /v1/calls): our INVITE, their 200, our ACK, BYE and their 200, in order', async () => {
    const mediaPort = await freeSipPort();
    const { sipp } = await sippPhone('uas-answer-media.xml', phonePort, { vars: { MEDIA_PORT: String(mediaPort) } });
    const placed = await api(h.gw)('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'lab' });
    expect(placed.status, JSON.stringify(placed.body)).toBe(201);
    const id = placed.body.id as string;
    const call = h.gw.ctx.registry.get(id)!;
    await waitFor(() => call.state === 'bridged', 10_000, 'outbound call bridged');
    expect((await api(h.gw)('DELETE', `/v1/calls/${id}`, {})).status).toBe(200);
    const res = await sipp;
    expect(res.code, res.errors + res.stderr).toBe(0);
    const view = await storedView(id);
    expect(view.direction).toBe('outbound');
    const ladder = ladderOf(view);
    expectInOrder(ladder, ['> INVITE', '< 200 OK (INVITE)', '> ACK', '> BYE', '< 200 OK (BYE)']);
    expect(ladder[0]).toBe('> INVITE');
    // Every message is this call's: the INVITE went to the phone, and nothing of another dialog slipped in.
    expect(view.signalling.every((m) => m.peer.endsWith(`:${phonePort}`))).toBe(true);
  });
});
