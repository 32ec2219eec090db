import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dominantFrequency } from '../support/audio.js';
import { EmbeddedSipEngine } from '../../src/sip/embedded.js';
import { waitFor } from '../support/gateway.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { nextCall, runSipp, SIPP_NUMS, sippTarget, usePcapDir } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { hangUpWhenHeard } from '../peers/hangup-when-heard.js';

const pcapDir = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1500)));
const pcapPath = () => join(pcapDir(), 'pcma-1000.pcap');

const NUMS = SIPP_NUMS;
const target = sippTarget;

describe.each(SIP_ENGINES)('SIP signalling against sipp (real gateway, sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  it('the AI ends the call: the gateway sends BYE and releases the RTP ports', async () => {
    const h = await sip.start({ onSession: (s) => hangUpWhenHeard(s, 40) }); // 0.8 s of sipp's 1.5 s tone
    const created = nextCall(h);
    const res = await runSipp({
      scenario: 'uac-gateway-bye.xml',
      target: target(h),
      vars: { ...NUMS, PCAP: pcapPath() },
    });
    expect(res.code, res.errors).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason?.by).toBe('ai');
    expect(res.messages).toMatch(/BYE sip:sipp@127\.0\.0\.1:\d+ SIP\/2\.0/);
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
    await waitFor(() => h.front.ports.used === 0, 2000, 'ports freed');
  });

  it('over TCP the gateway BYE reuses the carrier connection', async () => {
    const h = await sip.start({
      onSession: (s) =>
        setTimeout(() => {
          s.quiet();
          s.control.hangupAfterPlayout('goodbye');
        }, 800),
    });
    const res = await runSipp({
      scenario: 'uac-gateway-bye.xml',
      target: target(h),
      vars: { ...NUMS, PCAP: pcapPath() },
      args: ['-t', 't1'],
    });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/TCP message received[^\n]*\n\s*BYE sip:sipp@/);
    expect(res.messages).toMatch(/BYE sip:sipp@[^\n]*\nVia: SIP\/2\.0\/TCP /);
  });

  it('CANCEL before answer: 200 to the CANCEL, 487 to the INVITE, the call ends as cancelled', async () => {
    const h = await sip.start({ aiStartDelayMs: 3000 });
    const created = nextCall(h);
    const res = await runSipp({ scenario: 'uac-cancel.xml', target: target(h), vars: NUMS });
    expect(res.code, res.errors).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'cancel' });
    expect(call.times.answered).toBeUndefined();
    await waitFor(() => h.front.ports.used === 0, 4000, 'ports freed');
  });

  it('an INVITE from an address no trunk allows gets 403 and creates no call', async () => {
    const h = await sip.start();
    let created = 0;
    h.gw.ctx.registry.on('created', () => created++);
    const res = await runSipp({
      scenario: 'uac-rejected.xml',
      target: target(h),
      localIp: '127.0.0.2',
      vars: { ...NUMS, STATUS: '403' },
    });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/SIP\/2\.0 403 Forbidden \(unknown source address\)/);
    expect(created).toBe(0);
    expect(h.front.ports.used).toBe(0);
  });

  it('digest auth: 401 with a nonce, then the call is accepted with the right credentials', async () => {
    const h = await sip.start({
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
      target: target(h),
      vars: { FROM: '21234567', TO: '21000000', USER: 'go', PASS: 'trunk-secret' },
    });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(
      /WWW-Authenticate: Digest realm="gw\.example", nonce="[^"]+", algorithm=MD5, qop="auth"/,
    );
    const call = await created;
    expect(call.info).toMatchObject({ trunk: 'go-malta', from: '+35621234567', to: '+35621000000' });
    await waitFor(() => call.ended, 3000, 'call end');

    // Wrong password: challenged again (a fresh 401 with a new nonce, not a 403, 5xx or silence), never a call.
    let more = 0;
    h.gw.ctx.registry.on('created', () => more++);
    const bad = await runSipp({
      scenario: 'uac-auth-wrong.xml',
      target: target(h),
      vars: { FROM: '21234567', TO: '21000000', USER: 'go', PASS: 'wrong' },
    });
    expect(bad.code, bad.errors + bad.stderr).toBe(0);
    const finals = [...bad.messages.matchAll(/^SIP\/2\.0 ([2-6]\d\d) [\s\S]*?^CSeq: (\d+) INVITE/gm)].map(
      (m) => m[2] + ':' + m[1],
    );
    expect(finals).toEqual(['1:401', '2:401']);
    const nonces = [...bad.messages.matchAll(/WWW-Authenticate: Digest [^\n]*nonce="([^"]+)"/g)].map((m) => m[1]);
    expect(nonces).toHaveLength(2);
    expect(nonces[1]).not.toBe(nonces[0]);
    expect(more).toBe(0);
  });

  it('OPTIONS ping is answered 200 with Allow', async () => {
    const h = await sip.start();
    const res = await runSipp({ scenario: 'options.xml', target: target(h) });
    expect(res.code, res.errors).toBe(0);
    // Every method a call needs; PRACK only where the engine runs RFC 3262 itself (embedded).
    const allow =
      /^Allow: (.*)$/m
        .exec(res.messages)?.[1]
        ?.trim()
        .split(/\s*,\s*/) ?? [];
    const needed = ['INVITE', 'ACK', 'CANCEL', 'BYE', 'OPTIONS', 'UPDATE', 'REFER', 'NOTIFY'];
    expect(allow).toEqual(expect.arrayContaining(needed));
    expect(allow.includes('PRACK')).toBe(engine === 'embedded');
  });

  it('transfer: our REFER reaches the carrier, its 202 resolves it; the call then ends with our BYE', async () => {
    const h = await sip.start();
    const created = nextCall(h);
    const sipp = runSipp({ scenario: 'uac-refer-accept.xml', target: target(h), vars: NUMS });
    const call = await Promise.race([created, sipp.then((r) => Promise.reject(new Error(r.errors + r.stderr)))]);
    await waitFor(() => !!call.transfer, 10_000, 'established');
    await call.transfer!('+250788000111');
    await call.end({ by: 'ai', cause: 'transferred' });
    const res = await sipp;
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/REFER sip:sipp@[^\n]*\n[\s\S]*?Refer-To: <?sip:\+250788000111@/);
    expect(res.messages).toMatch(/BYE sip:sipp@[^\n]*\n[\s\S]*?Reason: [^\n]*transferred/);
  });

  it('draining: a new INVITE gets 503 with Retry-After and creates no call', async () => {
    const h = await sip.start();
    let created = 0;
    h.gw.ctx.registry.on('created', () => created++);
    h.front.drain();
    const res = await runSipp({ scenario: 'uac-rejected.xml', target: target(h), vars: { ...NUMS, STATUS: '503' } });
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/SIP\/2\.0 503 Service Unavailable \(shutting down\)[\s\S]*Retry-After: 60/i);
    expect(created).toBe(0);
  });

  it('re-INVITE hold (sendonly → recvonly) and unhold keep the call up', async () => {
    const h = await sip.start();
    const created = nextCall(h);
    const res = await runSipp({ scenario: 'uac-hold.xml', target: target(h), vars: NUMS });
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

  it('lost ACK: the 200 OK is retransmitted until the ACK arrives, and the call then works', async () => {
    const h = await sip.start();
    const created = nextCall(h);
    const res = await runSipp({ scenario: 'uac-lost-ack.xml', target: target(h), vars: NUMS });
    expect(res.code, res.errors).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 3000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    // Original + retransmissions at T1 (0.5 s) and 2·T1 later (1.5 s) within the 1.8 s hold-back.
    const oks = res.messages.match(/SIP\/2\.0 200 OK\r?\n[\s\S]*?CSeq: 1 INVITE/g) ?? [];
    expect(oks.length).toBeGreaterThanOrEqual(3);
  });

  it('a malformed INVITE gets 400 and the gateway keeps serving; garbage is dropped', async () => {
    const h = await sip.start();
    const sock = createSocket('udp4');
    const junk = [
      '\x00\x01garbage', // no start line
      'INVITE\r\n\r\n', // start line without URI or version
      'SIP/2.0 200\r\nVia: x\r\n\r\n', // parseable: a response matching no transaction, dropped
      'INVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\nv=0', // body shorter than Content-Length
    ];
    for (const j of junk) sock.send(Buffer.from(j, 'latin1'), h.port, '127.0.0.1');
    const embedded = h.front.engine instanceof EmbeddedSipEngine ? h.front.engine : undefined;
    // Embedded: the datagrams reached our socket before sipp starts. drachtio-server parses them
    // itself and never passes them on: nothing to wait for.
    if (embedded) await waitFor(() => embedded.counters.received >= junk.length, 3000, 'junk received');
    sock.close();
    const res = await runSipp({
      scenario: 'malformed.xml',
      target: target(h),
      vars: { ...NUMS, WHY: embedded ? ' \\(bad Max-Forwards\\)' : '' },
    });
    expect(res.code, res.errors).toBe(0);
    expect(h.gw.ctx.registry.size).toBe(0);
    if (embedded) {
      // Three datagrams are unparseable (the stray response parses and is dropped as matching no
      // transaction); the INVITE with "Max-Forwards: lots" is a valid message but an invalid
      // request, answered 400 with the reason.
      expect(res.messages).toMatch(/400 Bad Request \(bad Max-Forwards\)/);
      expect(h.front.describe()).toMatchObject({ malformed: 3, badRequests: 1 });
    } else {
      // drachtio-server (sofia-sip) answers the bad Max-Forwards itself with a bare 400.
      expect(res.messages).toMatch(/SIP\/2\.0 400 Bad Request\r?\n/);
    }
  });
});
