import { leasePortRange } from '../support/ports.js';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { testLogger } from '../../src/core/logger.js';
import { buildFronts } from '../../src/fronts.js';
import { Gateway } from '../../src/gateway.js';
import { SipFront } from '../../src/sip/front.js';
import { WEBHOOK_PATH, WhatsAppFront } from '../../src/webrtc/front.js';
import { waitFor } from '../support/gateway.js';
import { OpenAiApiStandIn } from '../peers/openai-sip/api-standin.js';
import { OpenAiSipPeer } from '../peers/openai-sip/sip-peer.js';
import { GraphStub } from '../peers/whatsapp/graph-stub.js';
import { whatsappConfig } from '../peers/whatsapp/harness.js';
import { WhatsAppUser } from '../peers/whatsapp/user.js';
import { opusSince } from '../peers/whatsapp/arrivals.js';
import { expectTone, toneSource } from '../peers/whatsapp/tones.js';

const SECRET = `whsec_${Buffer.from('openai-sip-wa-secret-0123456789').toString('base64')}`;
const API_KEY = 'sk-test-openai-sip-wa';
const APP_SECRET = 'wa-e2e-app-secret-0123456789';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

describe('WhatsApp caller → gateway → OpenAI SIP peer (real SIP leg, werift user, Graph stand-in)', () => {
  it('carries audio both ways through Opus ⇄ PCMU, and OpenAI hanging up terminates the WhatsApp call', async () => {
    const standIn = new OpenAiApiStandIn(API_KEY);
    const apiBaseUrl = await standIn.start();
    cleanups.push(() => standIn.stop());
    const graph = new GraphStub();
    await graph.start();
    cleanups.push(() => graph.stop());
    // The peer needs the gateway's HTTP port, known only once the gateway (which needs the peer's URI) runs.
    const ref: { port?: number } = {};
    const peer = new OpenAiSipPeer({
      webhookUrl: () => `http://127.0.0.1:${ref.port}/webhooks/openai/openai_sip`,
      secret: SECRET,
      api: standIn,
    });
    await peer.start();
    cleanups.push(() => peer.stop());

    const [rtpMin] = leasePortRange(100);
    const [webrtcMin, webrtcMax] = leasePortRange(100);
    const config = parseConfig(
      {
        http: { host: '127.0.0.1', port: 0 },
        records: { path: ':memory:' },
        shutdown: { drainSec: 0 },
        // The SIP front is on only to dial OpenAI: no trunks, so it takes no calls of its own.
        sip: { host: '127.0.0.1', port: 0, publicAddress: '127.0.0.1', rtpPortMin: rtpMin, rtpPortMax: rtpMin + 19 },
        whatsapp: {
          ...whatsappConfig(graph, [webrtcMin, webrtcMax], { appSecret: APP_SECRET, verifyToken: 'verify-me' }),
          mediaTimeoutSec: 8,
        },
        routes: {
          local: { kind: 'local' },
          openai_sip: {
            kind: 'openai-sip',
            projectId: 'proj_wa',
            webhookSecret: SECRET,
            apiKey: API_KEY,
            apiBaseUrl,
            sipUri: peer.uri('proj_wa'),
            sideband: false,
          },
        },
        routing: { default: 'local', rules: [{ front: 'whatsapp', route: 'openai_sip' }] },
      },
      {},
    );
    const gw = new Gateway(config, testLogger());
    const fronts = buildFronts(gw.ctx);
    for (const f of fronts) gw.addFront(f);
    const sip = fronts.find((f): f is SipFront => f instanceof SipFront)!;
    const wa = fronts.find((f): f is WhatsAppFront => f instanceof WhatsAppFront)!;
    await gw.start();
    ref.port = gw.httpPort;
    cleanups.push(() => gw.stop('test_done', 0));

    const user = new WhatsAppUser({
      webhookUrl: `http://127.0.0.1:${gw.httpPort}${WEBHOOK_PATH}`,
      appSecret: APP_SECRET,
      graph,
      number: '250788123456',
    });
    cleanups.push(() => user.close());
    await user.call();
    const pc = await peer.nextCall(0, 10_000);
    expect(pc.status).toBe(200);
    expect(pc.codec).toBe('PCMU'); // Opus callers reach OpenAI as µ-law
    await waitFor(() => gw.ctx.registry.list({ front: 'whatsapp', state: 'bridged' }).length === 1, 5000, 'bridged');
    const call = gw.ctx.registry.list({ front: 'whatsapp' })[0]!;
    expect(call.route).toBe('openai_sip');
    expect(pc.sipHeaders.find((h) => h.name === 'X-Gateway-Call-Id')?.value).toBe(call.id);
    expect(call.media!.bridge.passthrough).toBe(false);

    user.startSending(toneSource(1000));
    const t0 = performance.now();
    // 1.2 s each way (media may start late on a loaded box) instead of a fixed sleep.
    await waitFor(
      () => pc.media.heard(25).length >= 9600 && opusSince(user, t0 + 500) >= 60,
      15_000,
      '1.2 s of audio each way',
    );
    // The user's 1 kHz, Opus → PCMU, decoded at the OpenAI peer.
    const atPeer = pc.media.heard(25);
    expectTone(atPeer, 8000, 1000, { minSamples: 8000, minDb: -20 });
    // The peer's 440 Hz, PCMU → Opus, decoded at the user.
    const atUser = user.decodeReceived(t0 + 500);
    expectTone(atUser, 48000, 440, { minSamples: 48000, minDb: -20 });

    // OpenAI hangs up: the gateway ends the call and terminates it through the Graph API.
    await pc.hangup();
    const term = await graph.waitFor('terminate', user.waCallId, 5000);
    expect(term.problems).toEqual([]);
    await waitFor(() => call.ended, 3000, 'call ended');
    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_closed', detail: 'openai_bye' });
    await waitFor(
      () => wa.activeCount === 0 && sip.ports.used === 0 && sip.dialer!.activeCount === 0,
      3000,
      'released',
    );
  });
});
