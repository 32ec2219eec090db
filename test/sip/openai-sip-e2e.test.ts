import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { Call } from '../../src/core/call.js';
import { l16 } from '../../src/core/audio/format.js';
import { testLogger } from '../../src/core/logger.js';
import { buildFronts } from '../../src/fronts.js';
import { Gateway } from '../../src/gateway.js';
import { SipFront } from '../../src/sip/front.js';
import { dominantFrequency, loudestToneDb } from '../support/audio.js';
import { loopbackSipConfig, waitFor } from '../support/gateway.js';
import { OpenAiApiStandIn } from '../peers/openai-sip/api-standin.js';
import { sipPeerRoute } from '../peers/openai-sip/route.js';
import { OpenAiSipPeer, RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { incomingCallEvent, postSignedWebhook } from '../peers/openai-sip/webhook-signer.js';
import { carrierCall } from '../peers/sip/carrier-call.js';
import { runSipp } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { RawSipPeer } from '../peers/sip/udp-peer.js';
import { ToneAi } from '../peers/tone-ai.js';
import { drachtioUnavailable, startDrachtioServer, type DrachtioServer } from '../peers/drachtio/server.js';
import { leasePortRange } from '../support/ports.js';

const SECRET = `whsec_${Buffer.from('openai-sip-e2e-secret-0123456789').toString('base64')}`;
const API_KEY = 'sk-test-openai-sip-e2e';
const OPENAI_NUMBER = '0700000111'; // routed to openai_sip
const LOCAL_NUMBER = '0700000999'; // routed to the local agent (a 600 Hz tone AI here)

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'openai-sip-e2e-'));
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 3000));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Engine = 'embedded' | 'drachtio';

/** The gateway (both routes) between a carrier and the OpenAI SIP peer with its API stand-in. */
interface Rig {
  gw: Gateway;
  front: SipFront;
  standIn: OpenAiApiStandIn;
  peer: OpenAiSipPeer;
  webhookUrl: () => string;
  /** Where carriers send SIP: the gateway's own socket, or drachtio-server's contact. */
  gwPort: () => number;
  stop(): Promise<void>;
}

/** One set-up for both engines; drachtio runs a real drachtio-server that the gateway connects to. */
async function startRig(engine: Engine): Promise<Rig> {
  const server: DrachtioServer | undefined = engine === 'drachtio' ? await startDrachtioServer() : undefined;
  const standIn = new OpenAiApiStandIn(API_KEY);
  const apiBaseUrl = await standIn.start();
  // The peer posts its webhooks to the gateway created below (it needs the peer's URI first).
  const webhookUrl = () => `http://127.0.0.1:${gw.httpPort}/webhooks/openai/openai_sip`;
  const peer = new OpenAiSipPeer({ webhookUrl, secret: SECRET, api: standIn });
  await peer.start();
  const [rtpMin] = leasePortRange(100);
  const config = parseConfig(
    {
      ...loopbackSipConfig(rtpMin, rtpMin + 19, {
        ...(server && {
          engine: 'drachtio',
          drachtio: { host: '127.0.0.1', port: server.adminPort, secret: server.secret },
        }),
        rtpTimeoutSec: 5,
      }),
      trunks: [{ name: 'mtn-rwanda', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0' }],
      routes: {
        local: { kind: 'local' },
        openai_sip: sipPeerRoute(peer, { secret: SECRET, apiKey: API_KEY, apiBaseUrl }),
      },
      routing: { default: 'local', rules: [{ to: '+250700000111', route: 'openai_sip' }] },
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  gw.ctx.backends.register('local', () => ({
    kind: 'local',
    open: (o) => new ToneAi(600, { format: l16(8000), control: o.control }),
  }));
  const fronts = buildFronts(gw.ctx);
  for (const f of fronts) gw.addFront(f);
  const front = fronts.find((f): f is SipFront => f instanceof SipFront)!;
  await gw.start();
  if (server) await waitFor(() => front.ready(), 20_000, 'connected to drachtio-server');
  return {
    gw,
    front,
    standIn,
    peer,
    webhookUrl,
    gwPort: () => server?.sipPort ?? (front.engine as unknown as { port: number }).port,
    async stop() {
      await gw.stop('test_done', 0);
      await peer.stop();
      await server?.stop();
      await standIn.stop();
    },
  };
}

const ENGINES: { engine: Engine; path: string }[] = [
  { engine: 'embedded', path: 'carrier → gateway → OpenAI SIP peer' },
  { engine: 'drachtio', path: 'carrier → drachtio → gateway → drachtio → OpenAI SIP peer' },
];

for (const { engine, path } of ENGINES) {
  // drachtioUnavailable() prints why, once, so a skipped drachtio run is never silent.
  const skip = engine === 'drachtio' && !!drachtioUnavailable();
  describe.skipIf(skip)(`OpenAI SIP route over real SIP, sip.engine ${engine}: ${path}`, () => {
    let rig: Rig;
    let gw: Gateway;
    let front: SipFront;
    let standIn: OpenAiApiStandIn;
    let peer: OpenAiSipPeer;
    const extra: (() => Promise<void> | void)[] = [];
    beforeEach(async () => {
      rig = await startRig(engine);
      ({ gw, front, standIn, peer } = rig);
    });
    afterEach(async () => {
      for (const fn of extra.splice(0).reverse()) await fn();
      await rig.stop();
    });
    const gwPort = () => rig.gwPort();
    const webhookUrl = () => rig.webhookUrl();
    const created = () => new Promise<Call>((r) => gw.ctx.registry.once('created', r));

    it('sipp carrier: its 1 kHz reaches the peer untranscoded; the peer’s BYE reaches the carrier', async () => {
      const callP = created();
      const sipp = runSipp({
        scenario: 'uac-gateway-bye.xml',
        target: `127.0.0.1:${gwPort()}`,
        vars: { PCAP: join(dir, 'pcma-1000.pcap'), FROM: '0788123456', TO: OPENAI_NUMBER },
        timeoutSec: 20,
      });
      const pc = await peer.nextCall(0, 10_000);
      const call = await callP;
      expect(pc.status).toBe(200);
      expect(pc.codec).toBe('PCMA'); // the carrier's law, end to end
      // The webhook carried the INVITE's headers in order, with our call id and the caller's identity.
      expect(pc.sipHeaders[0]!.name).toBe('Via');
      expect(pc.sipHeaders.find((h) => h.name === 'X-Gateway-Call-Id')?.value).toBe(call.id);
      expect(pc.sipHeaders.find((h) => h.name === 'P-Asserted-Identity')?.value).toBe(
        '<sip:+250788123456@gateway.invalid>',
      );
      expect(pc.sipHeaders.some((h) => /authorization/i.test(h.name))).toBe(false);
      expect(pc.invite.requestUri).toBe(peer.uri('proj_test'));
      expect(pc.decision!.problems).toEqual([]);
      expect(pc.decision!.body).toMatchObject({ type: 'realtime', instructions: 'You answer test calls.' });
      await waitFor(() => call.state === 'bridged', 5000, 'bridged');
      expect(call.route).toBe('openai_sip');
      expect(call.media!.bridge.passthrough).toBe(true);

      // 1.2 s past the first 10 frames (media may start late on a loaded box) instead of a fixed sleep.
      await waitFor(() => pc.media.heard(10).length >= 9600, 15_000, "1.2 s of the carrier's tone at OpenAI");
      const heard = pc.media.heard(10);
      expect(heard.length).toBeGreaterThan(8000);
      expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
      // Loudest 100 ms: a late or concealed frame on a loaded box is a gap, not attenuation.
      expect(loudestToneDb(heard, 8000, 1000)).toBeGreaterThan(-18);

      await pc.hangup(); // OpenAI hangs up: the gateway BYEs the carrier, sipp answers 200 and passes
      const res = await sipp;
      expect(res.code, res.errors + res.stderr).toBe(0);
      await waitFor(() => call.ended, 3000, 'call ended');
      expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_closed', detail: 'openai_bye' });
      await waitFor(() => front.ports.used === 0 && front.dialer!.activeCount === 0, 3000, 'ports released');
    });

    it('raw carrier: audio both ways, the carrier’s BYE reaches the peer, another number goes to the local agent', async () => {
      const carrier = new RawSipPeer();
      await carrier.start();
      extra.push(() => carrier.close());

      /** One carrier call: INVITE (PCMU offer) → 200 → ACK, RTP tone out, recording what comes back. */
      const dial = async (to: string) => {
        const media = new RtpToneEndpoint(1000);
        await media.start();
        extra.push(() => media.close());
        const { callId, send } = await carrierCall(carrier, media, gwPort(), to);
        const bye = () => {
          media.stopSending();
          send('BYE', 2);
          return carrier.waitFor(
            (m) =>
              m.kind === 'response' &&
              m.status === 200 &&
              m.headers.get('cseq') === '2 BYE' &&
              m.headers.get('call-id') === callId,
            3000,
            '200 for BYE',
          );
        };
        return { media, bye, callId };
      };

      const toOpenAi = await dial(OPENAI_NUMBER);
      const toLocal = await dial(LOCAL_NUMBER);
      const pc = await peer.nextCall(0, 5000);
      expect(pc.codec).toBe('PCMU');
      await waitFor(
        () =>
          pc.media.heard(10).length >= 9600 &&
          toOpenAi.media.heard(10).length >= 9600 &&
          toLocal.media.heard(10).length >= 9600,
        15_000,
        '1.2 s of audio on every leg',
      );

      // Carrier → OpenAI: 1 kHz; OpenAI → carrier: the peer's 440 Hz.
      const atPeer = pc.media.heard(10);
      expect(Math.abs(dominantFrequency(atPeer, 8000) - 1000) / 1000).toBeLessThan(0.02);
      const atCarrier = toOpenAi.media.heard(10);
      expect(atCarrier.length).toBeGreaterThan(8000);
      expect(Math.abs(dominantFrequency(atCarrier, 8000) - 440) / 440).toBeLessThan(0.02);
      expect(loudestToneDb(atCarrier, 8000, 440)).toBeGreaterThan(-18);
      // The other number went to the local agent (600 Hz) in the same run; OpenAI saw one call.
      const atLocalCaller = toLocal.media.heard(10);
      expect(Math.abs(dominantFrequency(atLocalCaller, 8000) - 600) / 600).toBeLessThan(0.02);
      expect(peer.calls).toHaveLength(1);
      const routes = gw.ctx.registry.list().map((c) => [c.info.to, c.route]);
      expect(routes).toEqual(
        expect.arrayContaining([
          ['+250700000111', 'openai_sip'],
          ['+250700000999', 'local'],
        ]),
      );

      // The carrier hangs up: the gateway BYEs OpenAI.
      await toOpenAi.bye();
      await waitFor(() => pc.byeReceived, 3000, 'BYE at the OpenAI peer');
      await toLocal.bye();
      await waitFor(() => gw.ctx.registry.size === 0, 3000, 'calls ended');
      await waitFor(() => front.ports.used === 0 && front.dialer!.activeCount === 0, 3000, 'ports released');

      // A webhook for a call the gateway never placed is rejected through the API (unmatched: reject).
      expect(await postSignedWebhook(webhookUrl(), SECRET, incomingCallEvent('rtc_stranger', []))).toBe(200);
      const rej = await standIn.waitFor((r) => r.callId === 'rtc_stranger', 2000);
      expect(rej.action).toBe('reject');
    });
  });
}
