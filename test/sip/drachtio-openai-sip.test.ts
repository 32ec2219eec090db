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
import { dominantFrequency, toneLevelDb } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { OpenAiApiStandIn } from '../peers/openai-sip/api-standin.js';
import { OpenAiSipPeer } from '../peers/openai-sip/sip-peer.js';
import { runSipp } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { ToneAi } from '../peers/tone-ai.js';
import { drachtioUnavailable, startDrachtioServer, type DrachtioServer } from '../peers/drachtio/server.js';

const skip = !!drachtioUnavailable();

const SECRET = `whsec_${Buffer.from('openai-sip-e2e-secret-0123456789').toString('base64')}`;
const API_KEY = 'sk-test-openai-sip-e2e';
const OPENAI_NUMBER = '0700000111'; // routed to openai_sip

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'openai-sip-e2e-'));
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 3000));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let gw: Gateway;
let front: SipFront;
let standIn: OpenAiApiStandIn;
let peer: OpenAiSipPeer;
const extra: (() => Promise<void> | void)[] = [];
const webhookUrl = () => `http://127.0.0.1:${gw.httpPort}/webhooks/openai/openai_sip`;

let server: DrachtioServer | undefined;
beforeEach(async () => {
  if (skip) return;
  server = await startDrachtioServer();
  standIn = new OpenAiApiStandIn(API_KEY);
  const apiBaseUrl = await standIn.start();
  peer = new OpenAiSipPeer({ webhookUrl, secret: SECRET, api: standIn });
  await peer.start();
  const rtpMin = 28000 + Math.floor(Math.random() * 100) * 20;
  const config = parseConfig(
    {
      http: { host: '127.0.0.1', port: 0 },
      records: { path: ':memory:' },
      shutdown: { drainSec: 0 },
      sip: {
        engine: 'drachtio',
        drachtio: { host: '127.0.0.1', port: server.adminPort, secret: server.secret },
        host: '127.0.0.1',
        port: 0,
        publicAddress: '127.0.0.1',
        rtpPortMin: rtpMin,
        rtpPortMax: rtpMin + 19,
        rtpTimeoutSec: 5,
      },
      trunks: [{ name: 'mtn-rwanda', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0' }],
      routes: {
        local: { kind: 'local' },
        openai_sip: {
          kind: 'openai-sip',
          projectId: 'proj_test',
          webhookSecret: SECRET,
          apiKey: API_KEY,
          apiBaseUrl,
          sipUri: peer.uri('proj_test'),
          instructions: 'You answer test calls.',
          sideband: false,
        },
      },
      routing: { default: 'local', rules: [{ to: '+250700000111', route: 'openai_sip' }] },
    },
    {},
  );
  gw = new Gateway(config, testLogger());
  gw.ctx.backends.register('local', () => ({
    kind: 'local',
    open: (o) => new ToneAi(600, { format: l16(8000), control: o.control }),
  }));
  const fronts = buildFronts(gw.ctx);
  for (const f of fronts) gw.addFront(f);
  front = fronts.find((f): f is SipFront => f instanceof SipFront)!;
  await gw.start();
  await waitFor(() => front.ready(), 20_000, 'connected to drachtio-server');
});

afterEach(async () => {
  if (skip) return;
  for (const fn of extra.splice(0).reverse()) await fn();
  await gw.stop('test_done', 0);
  await peer.stop();
  await server?.stop();
  await standIn.stop();
});

/** Carriers reach the gateway at drachtio-server's SIP contact. */
const gwPort = () => server!.sipPort;
const created = () => new Promise<Call>((r) => gw.ctx.registry.once('created', r));

describe.skipIf(skip)(
  'OpenAI SIP route with sip.engine drachtio: carrier → drachtio → gateway → drachtio → OpenAI SIP peer',
  () => {
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

      await sleep(2000);
      const heard = pc.media.heard(10);
      expect(heard.length).toBeGreaterThan(8000);
      expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
      expect(toneLevelDb(heard, 8000, 1000)).toBeGreaterThan(-18);

      await pc.hangup(); // OpenAI hangs up: the gateway BYEs the carrier, sipp answers 200 and passes
      const res = await sipp;
      expect(res.code, res.errors + res.stderr).toBe(0);
      await waitFor(() => call.ended, 3000, 'call ended');
      expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_closed', detail: 'openai_bye' });
      await waitFor(() => front.ports.used === 0 && front.dialer!.activeCount === 0, 3000, 'ports released');
    });
  },
);
