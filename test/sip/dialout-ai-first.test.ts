import { createSocket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { useDrachtioRig } from '../peers/drachtio/gateway.js';
import { drachtioUnavailable } from '../peers/drachtio/server.js';
import { freeSipPort } from '../support/free-ports.js';
import { RealtimeTestServer, type RealtimeTestServerOptions } from '../peers/realtime/server.js';
import { runSipp, startSipHarness, type SipHarness, type SipHarnessOptions } from '../peers/sip/harness.js';
import { concat, dbfsOf, dominantFrequency, frames } from '../support/audio.js';
import { api, sleep, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { udpBound } from '../support/udp.js';

/** The stated bound: after the callee's 200 they hear the AI's greeting within this (saying nothing). */
const GREETING_WITHIN_MS = 2000;
/** The stand-in's greeting tone. */
const GREETING_HZ = 600;

const rig = useDrachtioRig({ hz: 700, ms: 1000 });
const engines = [
  { name: 'embedded', start: (o: SipHarnessOptions) => startSipHarness(o) },
  ...(drachtioUnavailable() ? [] : [{ name: 'drachtio', start: (o: SipHarnessOptions) => rig.start(o) }]),
];

let rt: RealtimeTestServer | undefined;
/** An embedded-engine gateway to stop after the test (the drachtio rig stops its own). */
let ownGateway: SipHarness | undefined;
let callee: RtpToneEndpoint | undefined;
afterEach(async () => {
  callee?.close();
  await ownGateway?.stop();
  await rt?.stop();
  rt = ownGateway = callee = undefined;
});

async function setup(
  engine: (typeof engines)[number],
  phonePort: number,
  server: RealtimeTestServerOptions = {},
  route: Record<string, unknown> = {},
) {
  rt = new RealtimeTestServer(server);
  await rt.start();
  const h = await engine.start({
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
    routes: { openai: { kind: 'realtime', url: rt.url, apiKey: 'sk-test', connectTimeoutMs: 3000, ...route } },
    routing: { default: 'openai', rules: [] },
  });
  if (engine.name === 'embedded') ownGateway = h;
  return { h, rt };
}

/** sipp's -trace_msg log, one entry per message: its wall-clock stamp (epoch ms) and text. */
function sippLog(messages: string): { at: number; text: string }[] {
  return messages.split(/^-{10,} /m).flatMap((b) => {
    const m = /^(\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d\.\d+)/.exec(b);
    return m ? [{ at: new Date(`${m[1]}T${m[2]!.slice(0, 12)}`).getTime(), text: b }] : [];
  });
}

/** When sipp logged the first message matching `what`. */
function sippStamp(messages: string, what: RegExp): number {
  const hit = sippLog(messages).find((e) => what.test(e.text));
  if (!hit) throw new Error(`no ${String(what)} in sipp's message log`);
  return hit.at;
}

const loud = (m: RtpToneEndpoint) => frames(m.heard(), 160).filter((f) => dbfsOf(f) > -30);

describe.each(engines)(
  'SIP dial-out: the AI is ready before the callee rings ($name engine, sipp callee)',
  (engine) => {
    it.each([
      { codec: 'PCMA', pt: '8' },
      { codec: 'PCMU', pt: '0' },
    ])(
      'callee answers $codec: the greeting reaches them soon after the 200, the AI was ready before the INVITE',
      async ({ codec, pt }) => {
        const phonePort = await freeSipPort();
        const { h, rt } = await setup(engine, phonePort);
        callee = new RtpToneEndpoint(1000, 0);
        const mediaPort = await callee.start();
        // Only the payload type matters for listening: the endpoint never sends (a silent callee).
        callee.setRemote('127.0.0.1', 9, codec as 'PCMA' | 'PCMU', Number(pt));
        const sipp = runSipp({
          scenario: 'uas-ring-answer-listen.xml',
          target: '127.0.0.1:5060', // unused by a UAS
          vars: { OFFER: '8 0 101', RING_MS: '800', MEDIA_PORT: String(mediaPort), CODEC: codec, PT: pt },
          args: ['-p', String(phonePort)],
          timeoutSec: 30,
        });
        await udpBound(phonePort);
        let answeredAt = 0;
        h.gw.ctx.registry.once('created', (c: Call) =>
          c.on('state', (s) => s === 'answered' && (answeredAt = performance.now())),
        );
        const placed = await api(h.gw)('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'lab' });
        expect(placed.status, JSON.stringify(placed.body)).toBe(201);
        const c = h.gw.ctx.registry.get(placed.body.id as string)!;
        // POST returns once the AI is configured and the INVITE is out: the call rings, silent.
        expect(c.state).toBe('ringing');
        const conn = rt.connections[0]!;
        const readyAt = conn.sent.find((e) => e.type === 'session.updated')!.at;
        expect(rt.receivedOf('response.create')).toHaveLength(0); // nobody to greet yet

        await waitFor(() => loud(callee!).length >= 25, 8000, 'greeting at the callee');
        const heardAt = performance.now();
        expect(answeredAt).toBeGreaterThan(readyAt);
        expect(heardAt - answeredAt).toBeLessThan(GREETING_WITHIN_MS + 1000); // polling slack
        expect(Math.abs(dominantFrequency(concat(loud(callee)), 8000) - GREETING_HZ)).toBeLessThan(12);
        expect(rt.receivedOf('response.create')).toEqual([{ type: 'response.create' }]);
        // The AI speaks our first codec (offered first) whatever the callee chose: no re-setup mid-call.
        expect(conn.session.audio?.output?.format).toEqual({ type: 'audio/pcma' });
        await waitFor(() => c.latency.view().answerToFirstAudio !== null, 3000, 'answer latency');
        expect(c.latency.view().answerToFirstAudio!.totalMs).toBeLessThan(GREETING_WITHIN_MS);

        const hung = await api(h.gw)('DELETE', `/v1/calls/${c.id}`, { reason: 'test over' });
        expect(hung.status).toBe(200);
        const res = await sipp;
        expect(res.code, res.errors + res.stderr).toBe(0);
        // Order across processes (one wall clock; sipp stamps each message): the stand-in had sent
        // session.updated before the callee even received the INVITE, so before its 200 went out.
        const readyWall = performance.timeOrigin + readyAt;
        const inviteAt = sippStamp(res.messages, /message received[^\n]*\n+INVITE sip:/);
        const okAt = sippStamp(res.messages, /message sent[^\n]*\n+SIP\/2\.0 200 OK[\s\S]*CSeq: \d+ INVITE/);
        expect(readyWall).toBeLessThanOrEqual(inviteAt + 1); // +1: sipp's stamp is cut to the ms
        expect(inviteAt).toBeLessThan(okAt);
        expect(c.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
        await waitFor(() => h.front.ports.used === 0 && h.front.dialer!.activeCount === 0, 3000, 'ports released');
        expect(rt.violations).toEqual([]);
      },
    );
  },
);

describe('SIP dial-out when the AI cannot be reached', () => {
  it.each([{ policy: 'reject' }, { policy: 'apologise' }])(
    'Realtime 401, onAiUnavailable $policy (embedded engine): the callee is never dialled and the API says why',
    async ({ policy }) => {
      // The callee's address: a plain UDP socket that counts whatever reaches it.
      const phone = createSocket('udp4');
      let datagrams = 0;
      phone.on('message', () => datagrams++);
      await new Promise<void>((r) => phone.bind(0, '127.0.0.1', () => r()));
      try {
        const { h } = await setup(engines[0]!, phone.address().port, { rejectWith: 401 }, { onAiUnavailable: policy });
        const placed = await api(h.gw)('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'lab' });
        expect(placed.status).toBe(502);
        expect(placed.body.error).toMatchObject({ code: 'ai_connect_failed' });
        expect(placed.body.error!.message).toMatch(/not dialled/);
        const id = (placed.body.error as unknown as { details: { callId: string } }).details.callId;
        const rec = await api(h.gw)('GET', `/v1/calls/${id}`);
        expect(rec.status).toBe(200);
        expect(rec.body.endReason).toMatchObject({ by: 'error', cause: 'ai_connect_failed' });
        expect(String((rec.body.endReason as { detail: string }).detail)).toMatch(/401/);
        await sleep(300); // an INVITE sent despite the refusal would have arrived by now
        expect(datagrams).toBe(0);
        expect(h.front.ports.used).toBe(0);
        expect(h.front.dialer!.activeCount).toBe(0);
      } finally {
        phone.close();
      }
    },
  );

  it.each(engines)(
    'the AI is lost while the callee rings ($name engine): CANCEL with a Reason, never answered into silence',
    async (engine) => {
      const phonePort = await freeSipPort();
      // The socket drops 300 ms after it opens and the reconnect is refused: the AI is gone for good.
      const { h, rt } = await setup(engine, phonePort, { dropAfterMs: 300, rejectWith: 401, rejectFrom: 1 });
      const sipp = runSipp({
        scenario: 'uas-busy-then-ring.xml', // rings until CANCEL (200 to it, 487 to the INVITE)
        target: '127.0.0.1:5060',
        args: ['-p', String(phonePort)],
        timeoutSec: 30,
      });
      await udpBound(phonePort);
      const placed = await api(h.gw)('POST', '/v1/calls', { front: 'sip', to: '+250788000001', trunk: 'lab' });
      expect(placed.status, JSON.stringify(placed.body)).toBe(201);
      const c = h.gw.ctx.registry.get(placed.body.id as string)!;
      const res = await sipp;
      expect(res.code, res.errors + res.stderr).toBe(0);
      const cancel = sippLog(res.messages).find((e) =>
        /message received[^\n]*\n+CANCEL sip:\+250788000001@/.test(e.text),
      );
      expect(cancel?.text).toMatch(/^Reason: Q\.850;cause=41;text="ai_unavailable"\r?$/m);
      const okToInvite = /message sent[^\n]*\n+SIP\/2\.0 200 OK[\s\S]*CSeq: \d+ INVITE/;
      expect(sippLog(res.messages).filter((e) => okToInvite.test(e.text))).toEqual([]);
      await waitFor(() => c.ended, 3000, 'call ended');
      expect(c.endReason).toMatchObject({ by: 'ai', cause: 'ai_unavailable' });
      expect(rt.connections.length).toBeGreaterThanOrEqual(1);
      await waitFor(() => h.front.ports.used === 0 && h.front.dialer!.activeCount === 0, 3000, 'ports released');
    },
  );
});
