import { describe, expect, it } from 'vitest';
import { dominantFrequency } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { useDrachtioRig } from '../peers/drachtio/gateway.js';
import { drachtioUnavailable } from '../peers/drachtio/server.js';
import { RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { carrierCall } from '../peers/sip/carrier-call.js';
import { nextCall, runSipp } from '../peers/sip/harness.js';
import { RawSipPeer } from '../peers/sip/udp-peer.js';
import { hangUpWhenHeard } from '../peers/hangup-when-heard.js';

const skip = !!drachtioUnavailable();
const NUMS = { FROM: '0788123456', TO: '0700000001' };

const rig = useDrachtioRig({ hz: 1000, ms: 2000 });

describe.skipIf(skip)('inbound SIP through a real drachtio-server (sip.engine: drachtio)', () => {
  it('raw carrier: its 1 kHz reaches the AI and the AI’s 440 Hz reaches the carrier; the AI hangs up → BYE via drachtio', async () => {
    const h = await rig.start({
      onSession: (s) => hangUpWhenHeard(s, 75), // 1.5 s heard: the carrier has had as long to hear the AI
    });
    const carrier = new RawSipPeer();
    await carrier.start();
    const media = new RtpToneEndpoint(1000);
    await media.start();
    try {
      const created = nextCall(h);
      const { callId } = await carrierCall(carrier, media, h.port);
      const call = await created;
      const bye = await carrier.waitFor(
        (m) => m.kind === 'request' && m.method === 'BYE' && m.headers.get('call-id') === callId,
        10_000,
        'BYE from the gateway',
      );
      carrier.reply(bye, 200, 'OK', h.port);
      expect(bye.headers.get('reason')).toMatch(/goodbye/);
      media.stopSending();
      await waitFor(() => call.ended, 3000, 'call end');
      expect(call.endReason?.by).toBe('ai');
      const atCarrier = media.heard(10);
      expect(atCarrier.length).toBeGreaterThan(8000);
      expect(Math.abs(dominantFrequency(atCarrier, 8000) - 440) / 440).toBeLessThan(0.02);
      const atAi = h.sessions.get(call.id)!.heardPcm(10);
      expect(Math.abs(dominantFrequency(atAi, 8000) - 1000) / 1000).toBeLessThan(0.02);
      await waitFor(() => h.front.ports.used === 0, 3000, 'ports freed');
    } finally {
      media.close();
      carrier.close();
    }
  });

  it('over TCP: call, audio and BYE; the INVITE is reported with its real transport', async () => {
    const h = await rig.start();
    const transports: string[] = [];
    h.front.engine.on('invite', (inv) => transports.push(inv.source.transport));
    const created = nextCall(h);
    const res = await runSipp({
      scenario: 'uac-audio.xml',
      target: h.target,
      vars: { PCAP: rig.pcap, PT: '8', CODEC: 'PCMA', PAUSE: '1500', ...NUMS },
      args: ['-t', 't1'],
    });
    expect(res.code, res.errors + res.stderr).toBe(0);
    expect(transports).toEqual(['tcp']);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
  });

  it('no ACK: the call is not established on the 200; drachtio-server BYEs after 64·T1 and the call ends ack_timeout', async () => {
    const h = await rig.start({ sip: { rtpTimeoutSec: 120 } }); // sipp sends no RTP: only the ACK timeout may end it
    const created = nextCall(h);
    const res = await runSipp({ scenario: 'uac-no-ack.xml', target: h.target, vars: NUMS, timeoutSec: 45 });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/BYE sip:sipp@[^\n]*\n[\s\S]*?Reason: SIP;cause=200;text="ACK timeout"/);
    const call = await created;
    await waitFor(() => call.ended, 5000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'timeout', cause: 'ack_timeout' });
    await sleep(100);
    await waitFor(() => h.front.ports.used === 0, 3000, 'ports freed');
  }, 60_000);

  it('session timer with refresher=uas: drachtio-server sends the refreshing re-INVITE before half the interval; the call lives on', async () => {
    const h = await rig.start({ sip: { rtpTimeoutSec: 120 } }); // sipp sends no RTP here
    const created = nextCall(h);
    const res = await runSipp({ scenario: 'uac-refresher-uas.xml', target: h.target, vars: NUMS, timeoutSec: 70 });
    expect(res.code, res.errors).toBe(0);
    // The refresh carried our current SDP (same o= version: no change) and Session-Expires.
    const refresh = /INVITE sip:sipp@[^\n]*\n[\s\S]*?(?=\n-{10})/.exec(res.messages)?.[0] ?? '';
    expect(refresh).toMatch(/Session-Expires: 90/);
    expect(refresh).toMatch(/m=audio \d+ RTP\/AVP 8 101/);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
  }, 90_000);
});
