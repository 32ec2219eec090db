import { describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency, toneLevelDb } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { useDrachtioRig, type DrachtioHarness } from '../peers/drachtio/gateway.js';
import { drachtioUnavailable } from '../peers/drachtio/server.js';
import { RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { runSipp } from '../peers/sip/harness.js';
import { newId, RawSipPeer } from '../peers/sip/udp-peer.js';
import { readOffer } from '../../src/sip/sdp.js';
import { tagOf, type SipMessage, type SipResponse } from '../../src/sip/message.js';

const skip = !!drachtioUnavailable();
const NUMS = { FROM: '0788123456', TO: '0700000001' };

const rig = useDrachtioRig({ hz: 1000, ms: 2000 });
const nextCall = (h: DrachtioHarness) => new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));

describe.skipIf(skip)('inbound SIP through a real drachtio-server (sip.engine: drachtio)', () => {
  it('sipp PCMA call: the caller tone reaches the AI, RTP flows both ways, caller BYE ends and frees everything', async () => {
    const h = await rig.start();
    const created = nextCall(h);
    const res = await runSipp({
      scenario: 'uac-audio.xml',
      target: h.target,
      vars: { PCAP: rig.pcap, PT: '8', CODEC: 'PCMA', PAUSE: '2500', ...NUMS },
    });
    expect(res.code, res.errors + res.stderr).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    expect(call.info).toMatchObject({ front: 'sip', from: '+250788123456', to: '+250700000001', trunk: 'mtn-rwanda' });
    // The 200 came from drachtio-server's contact, with the session timer the trunk asked for.
    expect(res.messages).toMatch(new RegExp(`Contact: <sip:[^>]*127\\.0\\.0\\.1:${rig.server.sipPort}`));
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(heard.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
    expect(toneLevelDb(heard, 8000, 1000)).toBeGreaterThan(-18);
    const q = Object.values(call.quality)[0] as { packetsReceived: number; packetsSent: number };
    expect(q.packetsReceived).toBeGreaterThan(80);
    expect(q.packetsSent).toBeGreaterThan(80);
    await waitFor(() => h.front.ports.used === 0 && h.front.activeCount === 0, 3000, 'ports freed');
  });

  it('raw carrier: its 1 kHz reaches the AI and the AI’s 440 Hz reaches the carrier; the AI hangs up → BYE via drachtio', async () => {
    const h = await rig.start({
      onSession: (s) =>
        setTimeout(() => {
          s.quiet();
          s.control.hangupAfterPlayout('goodbye');
        }, 2500),
    });
    const carrier = new RawSipPeer();
    await carrier.start();
    const media = new RtpToneEndpoint(1000);
    const rtpPort = await media.start();
    try {
      const callId = newId();
      const fromTag = newId();
      const sdp = [
        'v=0',
        'o=carrier 1 1 IN IP4 127.0.0.1',
        's=-',
        'c=IN IP4 127.0.0.1',
        't=0 0',
        `m=audio ${rtpPort} RTP/AVP 0 101`,
        'a=rtpmap:0 PCMU/8000',
        'a=rtpmap:101 telephone-event/8000',
        'a=sendrecv',
        '',
      ].join('\r\n');
      const head = (method: string, cseq: number, toTag?: string) => [
        `${method} sip:0700000001@127.0.0.1:${h.port} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${carrier.port};branch=z9hG4bK${newId()};rport`,
        `From: <sip:0788123456@127.0.0.1>;tag=${fromTag}`,
        `To: <sip:0700000001@127.0.0.1>${toTag ? `;tag=${toTag}` : ''}`,
        `Call-ID: ${callId}`,
        `CSeq: ${cseq} ${method}`,
        `Contact: <sip:carrier@127.0.0.1:${carrier.port}>`,
        'Max-Forwards: 70',
      ];
      const created = nextCall(h);
      carrier.send(
        [...head('INVITE', 1), 'Content-Type: application/sdp', `Content-Length: ${sdp.length}`, '', sdp].join('\r\n'),
        h.port,
      );
      const isOk = (m: SipMessage) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId;
      const ok = (await carrier.waitFor(isOk, 10_000, '200 OK')) as SipResponse;
      const call = await created;
      const answer = readOffer(ok.body, ['PCMU'], true);
      if (!answer.ok) throw new Error(answer.reason);
      carrier.send([...head('ACK', 1, tagOf(ok.headers.get('to'))), 'Content-Length: 0', '', ''].join('\r\n'), h.port);
      media.setRemote(answer.offer.address, answer.offer.port, 'PCMU', answer.offer.payloadType);
      media.startSending();
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

  it('CANCEL before answer: drachtio answers 200 + 487, the call ends as cancelled and frees its ports', async () => {
    const h = await rig.start({ aiStartDelayMs: 3000 });
    const created = nextCall(h);
    const res = await runSipp({ scenario: 'uac-cancel.xml', target: h.target, vars: NUMS });
    expect(res.code, res.errors).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'cancel' });
    expect(call.times.answered).toBeUndefined();
    await waitFor(() => h.front.ports.used === 0, 4000, 'ports freed');
  });

  it('digest auth from the trunk config: 401 challenge through drachtio, then the call with the right credentials', async () => {
    const h = await rig.start({
      trunks: [
        {
          name: 'go-malta',
          allow: ['127.0.0.0/8'],
          countryCode: '356',
          auth: { realm: 'gw.example', username: 'go', password: 'trunk-secret' },
        },
      ],
    });
    const created = nextCall(h);
    const res = await runSipp({
      scenario: 'uac-auth.xml',
      target: h.target,
      vars: { FROM: '21234567', TO: '21000000', USER: 'go', PASS: 'trunk-secret' },
    });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/WWW-Authenticate: Digest realm="gw\.example", nonce="[^"]+"/);
    expect(res.messages.match(/SIP\/2\.0 401 Unauthorized/g)).toHaveLength(1); // our ACK matched it
    const call = await created;
    expect(call.info).toMatchObject({ trunk: 'go-malta', from: '+35621234567', to: '+35621000000' });
    await waitFor(() => call.ended, 3000, 'call end');
  });

  it('transfer: REFER goes to the carrier through drachtio, 202 resolves it; the call then ends with our BYE', async () => {
    const h = await rig.start();
    const created = nextCall(h);
    const sipp = runSipp({ scenario: 'uac-refer-accept.xml', target: h.target, vars: NUMS });
    const call = await Promise.race([created, sipp.then((r) => Promise.reject(new Error(r.errors + r.stderr)))]);
    await waitFor(() => !!call.transfer, 10_000, 'established');
    await call.transfer!('+250788000111');
    await call.end({ by: 'ai', cause: 'transferred' });
    const res = await sipp;
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/BYE sip:sipp@[^\n]*\n[\s\S]*?Reason: [^\n]*transferred/);
  });

  it('OPTIONS is answered 200 with our Allow', async () => {
    const h = await rig.start();
    const res = await runSipp({ scenario: 'options.xml', target: h.target });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER/);
  });

  it('re-INVITE hold (sendonly → recvonly) and unhold keep the call up', async () => {
    const h = await rig.start();
    const created = nextCall(h);
    const res = await runSipp({ scenario: 'uac-hold.xml', target: h.target, vars: NUMS });
    expect(res.code, res.errors).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    const bodies = [...res.messages.matchAll(/SIP\/2\.0 200 OK[\s\S]*?a=(sendrecv|recvonly|sendonly|inactive)/g)].map(
      (m) => m[1],
    );
    expect(bodies).toContain('recvonly');
    expect(bodies.at(-1)).toBe('sendrecv');
  });

  it('draining: a new INVITE gets 503 with Retry-After and creates no call', async () => {
    const h = await rig.start();
    let created = 0;
    h.gw.ctx.registry.on('created', () => created++);
    h.front.drain();
    const res = await runSipp({ scenario: 'uac-rejected.xml', target: h.target, vars: { ...NUMS, STATUS: '503' } });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/SIP\/2\.0 503 Service Unavailable \(shutting down\)[\s\S]*Retry-After: 60/i);
    expect(created).toBe(0);
  });

  it('unknown source address: 403 through drachtio (the trunk match sees the real source)', async () => {
    const h = await rig.start();
    const res = await runSipp({
      scenario: 'uac-rejected.xml',
      target: h.target,
      localIp: '127.0.0.2',
      vars: { ...NUMS, STATUS: '403' },
    });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/SIP\/2\.0 403 Forbidden \(unknown source address\)/);
    expect(h.gw.ctx.registry.size).toBe(0);
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
