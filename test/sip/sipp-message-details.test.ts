import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dominantFrequency } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { nextCall, runSipp, SIPP_NUMS, sippTarget, usePcapDir } from '../peers/sip/harness.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

const pcapDir = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1500)));
const pcapPath = () => join(pcapDir(), 'pcma-1000.pcap');

const NUMS = SIPP_NUMS;
const target = sippTarget;

describe.each(SIP_ENGINES)('carrier message details against sipp (real gateway, sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  it('SIP-I: a multipart/mixed INVITE (SDP + ISUP) with an ;npdi;rn= Request-URI is answered, with audio', async () => {
    const h = await sip.start();
    const created = nextCall(h);
    const res = await runSipp({
      scenario: 'uac-sip-i.xml',
      target: target(h),
      vars: { ...NUMS, PCAP: pcapPath(), PAUSE: '2000' },
    });
    expect(res.code, res.errors).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    expect(call.info).toMatchObject({ from: '+250788123456', to: '+250700000001' });
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
  });

  it('a merged INVITE (same dialog and CSeq, new branch) gets 482 and never starts a second call', async () => {
    const h = await sip.start({ aiStartDelayMs: 1000 }); // the copy arrives while the first still rings
    let created = 0;
    h.gw.ctx.registry.on('created', () => created++);
    const first = nextCall(h);
    const res = await runSipp({ scenario: 'uac-merged-invite.xml', target: target(h), vars: NUMS });
    expect(res.code, res.errors).toBe(0);
    const call = await first;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(created).toBe(1);
    expect(res.messages.match(/SIP\/2\.0 200 OK\r?\n[\s\S]*?CSeq: 1 INVITE/g)).toHaveLength(1);
  });

  sip.itExcept(
    ['drachtio'],
    'drachtio-server (sofia-sip) drops an INVITE whose Request-URI has a bad %-escape without any answer; the gateway never sees it',
  )('a bad %-escape in the Request-URI gets 400 (never silence) and the gateway keeps serving', async () => {
    const h = await sip.start();
    const res = await runSipp({ scenario: 'bad-escape.xml', target: target(h), vars: NUMS });
    expect(res.code, res.errors).toBe(0);
    expect(h.gw.ctx.registry.size).toBe(0);
    expect(h.front.describe()).toMatchObject({ badRequests: 1 });
  });

  it('digest auth with a ;user=phone Request-URI: the quoted uri keeps its ";" and the call is accepted', async () => {
    const h = await sip.start({
      trunks: [
        {
          name: 'mtn-rwanda',
          allow: ['127.0.0.0/8'],
          countryCode: '250',
          nationalPrefix: '0',
          auth: { realm: 'gw.example', username: 'mtn', password: 'trunk-secret' },
        },
      ],
    });
    const created = nextCall(h);
    const res = await runSipp({
      scenario: 'uac-auth-user-phone.xml',
      target: target(h),
      vars: { ...NUMS, USER: 'mtn', PASS: 'trunk-secret' },
      // sipp's digest uri is remote_ip:remote_port unless told: make it the Request-URI, as carriers do.
      args: ['-auth_uri', `0700000001@127.0.0.1:${h.port};user=phone`],
    });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/Authorization: Digest [^\n]*uri="sip:0700000001@127\.0\.0\.1:\d+;user=phone"/);
    const call = await created;
    expect(call.info).toMatchObject({ trunk: 'mtn-rwanda', from: '+250788123456', to: '+250700000001' });
    await waitFor(() => call.ended, 3000, 'call end');
  });
});
