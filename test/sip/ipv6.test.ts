import { createSocket } from 'node:dgram';
import { createConnection } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { GatewayError } from '../../src/core/errors.js';
import { SipStreamFramer } from '../../src/sip/embedded.js';
import type { SipDialog } from '../../src/sip/engine.js';
import {
  hostPort,
  makeResponse,
  parseMessage,
  parseNameAddr,
  parseUri,
  parseVia,
  serialize,
  tagOf,
  type SipMessage,
  type SipRequest,
} from '../../src/sip/message.js';
import { waitFor } from '../support/gateway.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { EngineRig } from '../peers/sip/engine-rig.js';

/** Whether this machine has an IPv6 loopback (containers often have none): the wire tests need one. */
const hasIpv6Loopback = await new Promise<boolean>((resolve) => {
  const s = createSocket('udp6');
  s.once('error', () => resolve(false));
  s.bind(0, '::1', () => s.close(() => resolve(true)));
});
if (!hasIpv6Loopback) console.log('ipv6.test: no IPv6 loopback (::1) on this machine: IPv6 wire tests skipped');

let rig: EngineRig | undefined;
afterEach(async () => {
  await rig?.stop();
  rig = undefined;
});

const isReq = (method: string) => (m: SipMessage) => m.kind === 'request' && m.method === method;
const isRes = (status: number, method: string) => (m: SipMessage) =>
  m.kind === 'response' && m.status === status && m.headers.get('cseq')!.endsWith(method);

/** A carrier's request over IPv6: bracketed sent-by, Contact and Request-URI. */
function request6(p: { method: string; callId: string; localPort: number; enginePort: number; toTag?: string }) {
  const sdp = p.method === 'INVITE' ? sdpOffer(4000).replace(/IN IP4 127\.0\.0\.1/g, 'IN IP6 ::1') : '';
  return [
    `${p.method} sip:0700000001@[::1]:${p.enginePort} SIP/2.0`,
    `Via: SIP/2.0/UDP [::1]:${p.localPort};branch=z9hG4bK${newId()};rport`,
    'From: <sip:0788123456@[::1]>;tag=carrier',
    `To: <sip:0700000001@[::1]>${p.toTag ? `;tag=${p.toTag}` : ''}`,
    `Call-ID: ${p.callId}`,
    `CSeq: ${p.method === 'BYE' ? 2 : 1} ${p.method}`,
    `Contact: <sip:carrier@[::1]:${p.localPort}>`,
    'Max-Forwards: 70',
    ...(sdp ? ['Content-Type: application/sdp'] : []),
    `Content-Length: ${sdp.length}`,
    '',
    sdp,
  ].join('\r\n');
}

describe('IPv6 host syntax (RFC 3261 §25.1, RFC 5954)', () => {
  it('parses bracketed hosts in URIs, Via and name-addr, and writes them bracketed', () => {
    expect(parseUri('sip:+250788123456@[2001:db8::1]:5070;transport=tcp')).toEqual({
      scheme: 'sip',
      user: '+250788123456',
      host: '2001:db8::1',
      port: 5070,
      params: { transport: 'tcp' },
    });
    expect(parseUri('sips:[::1]')).toMatchObject({ scheme: 'sips', user: undefined, host: '::1', port: undefined });
    const via = parseVia('SIP/2.0/UDP [2001:DB8::1]:5062;branch=z9hG4bKx;received=2001:db8::9;rport=5064')!;
    expect(via).toMatchObject({ transport: 'UDP', host: '2001:DB8::1', port: 5062 });
    expect(via.params).toEqual({ branch: 'z9hG4bKx', received: '2001:db8::9', rport: '5064' });
    expect(parseVia('SIP/2.0/TCP [::1];branch=z9hG4bKy')).toMatchObject({ host: '::1', port: undefined });
    const na = parseNameAddr('"Carrier" <sip:a@[::1]:5070;transport=udp;lr>;tag=t1')!;
    expect(na).toEqual({ display: 'Carrier', uri: 'sip:a@[::1]:5070;transport=udp;lr', params: { tag: 't1' } });
    expect(parseUri(na.uri)).toMatchObject({ host: '::1', port: 5070, params: { transport: 'udp', lr: '' } });
    expect(hostPort('2001:db8::1', 5060)).toBe('[2001:db8::1]:5060');
    expect(hostPort('[::1]', 5060)).toBe('[::1]:5060');
    expect(hostPort('192.0.2.1', 5060)).toBe('192.0.2.1:5060');
    expect(hostPort('sbc.example.com')).toBe('sbc.example.com');
  });

  it('hostile: an unclosed or stray bracket is no URI / Via (the request earns a 400, never a wrong host)', () => {
    expect(parseUri('sip:a@[::1:5060')).toBeUndefined();
    expect(parseUri('sip:a@::1]:5060')).toBeUndefined();
    expect(parseUri('sip:a@[zz::1]')).toBeUndefined();
    expect(parseVia('SIP/2.0/UDP [::1:5060;branch=z9hG4bKx')).toBeUndefined();
    expect(parseVia('SIP/2.0/UDP ::1]:5060;branch=z9hG4bKx')).toBeUndefined();
  });
});

describe.skipIf(!hasIpv6Loopback)('IPv6 signalling over ::1 (embedded engine, raw UDP peer)', () => {
  it('a carrier on ::1 calls the engine on ::1: 100/180/200 with bracketed Via (received/rport) and Contact, ACK, BYE', async () => {
    rig = await EngineRig.start({ host: '::1', publicAddress6: '2001:db8::5' });
    const engine = rig.engine;
    const peer = new RawSipPeer('::1');
    await peer.start();
    try {
      const callId = newId();
      peer.send(
        request6({ method: 'INVITE', callId, localPort: peer.port, enginePort: engine.port }),
        engine.port,
        '::1',
      );
      await waitFor(() => rig!.invites.length === 1, 3000, 'INVITE over IPv6');
      const inv = rig.invites[0]!;
      inv.progress(180);
      const dialogP = inv.answer('v=0\r\n');
      const trying = await peer.waitFor(isRes(100, 'INVITE'), 3000, '100');
      const ringing = await peer.waitFor(isRes(180, 'INVITE'), 3000, '180');
      const ok = await peer.waitFor(isRes(200, 'INVITE'), 3000, '200');
      for (const r of [trying, ringing, ok]) {
        // RFC 3581 / RFC 5118: received holds the bare IPv6 address, rport the source port.
        expect(r.headers.get('via')).toBe(
          `SIP/2.0/UDP [::1]:${peer.port};branch=${parseVia(r.headers.get('via')!)!.params.branch};rport=${peer.port};received=::1`,
        );
      }
      // sip.publicAddress6 is what an IPv6 peer is told to reach us at.
      expect(ok.headers.get('contact')).toBe(`<sip:gateway@[2001:db8::5]:${engine.port};transport=udp>`);
      const toTag = tagOf(ok.headers.get('to'));
      peer.send(
        request6({ method: 'ACK', callId, localPort: peer.port, enginePort: engine.port, toTag }),
        engine.port,
        '::1',
      );
      const dialog = await dialogP;
      const byeSeen = new Promise<void>((r) => dialog.on('bye', () => r()));
      peer.send(
        request6({ method: 'BYE', callId, localPort: peer.port, enginePort: engine.port, toTag }),
        engine.port,
        '::1',
      );
      await byeSeen;
      expect((await peer.waitFor(isRes(200, 'BYE'), 3000, '200 to BYE')).headers.get('call-id')).toBe(callId);
      await waitFor(() => engine.activeState.dialogs === 0, 2000, 'dialog released');
    } finally {
      peer.close();
    }
  });

  it('dials sip:+250...@[::1]:port: bracketed Request-URI, Via, Contact and From; answered; our BYE reaches the peer', async () => {
    rig = await EngineRig.start({ host: '::1' });
    const engine = rig.engine;
    const peer = new RawSipPeer('::1');
    await peer.start();
    try {
      const uri = `sip:+250788123456@[::1]:${peer.port}`;
      const dial = engine.invite({ uri, from: '+250700000001', sdp: sdpOffer(40000), timeoutMs: 5000 });
      const inv = (await peer.waitFor(isReq('INVITE'), 3000, 'INVITE over IPv6')) as SipRequest;
      expect(inv.uri).toBe(uri);
      const branch = parseVia(inv.headers.get('via')!)!.params.branch;
      expect(inv.headers.get('via')).toBe(`SIP/2.0/UDP [::1]:${engine.port};branch=${branch};rport`);
      expect(inv.headers.get('contact')).toBe(`<sip:gateway@[::1]:${engine.port};transport=udp>`);
      expect(inv.headers.get('from')).toMatch(/^<sip:\+250700000001@\[::1\]>;tag=\w+$/);
      const res = makeResponse(inv, 200, undefined, 'peer6');
      res.headers.set('contact', `<sip:peer@[::1]:${peer.port}>`);
      res.headers.set('content-type', 'application/sdp');
      res.body = sdpOffer(40100);
      peer.send(serialize(res).toString('latin1'), engine.port, '::1');
      const { dialog } = (await dial) as { dialog: SipDialog };
      await peer.waitFor(isReq('ACK'), 3000, 'ACK');
      peer.onMessage = (m) => {
        if (m.kind === 'request' && m.method === 'BYE') peer.reply(m, 200, 'OK', engine.port, '::1');
      };
      await dialog.bye('test over');
      const bye = await peer.waitFor(isReq('BYE'), 3000, 'BYE');
      expect((bye as SipRequest).uri).toBe(`sip:peer@[::1]:${peer.port}`);
      expect(parseVia(bye.headers.get('via')!)).toMatchObject({ host: '::1', port: engine.port });
    } finally {
      peer.close();
    }
  });

  it('the TCP listener is IPv6 too: an OPTIONS over TCP from ::1 gets 200 on the same connection, Via stamped', async () => {
    rig = await EngineRig.start({ host: '::1' });
    const engine = rig.engine;
    const sock = createConnection({ host: '::1', port: engine.port });
    await new Promise<void>((r, j) => sock.once('connect', () => r()).once('error', j));
    const framer = new SipStreamFramer();
    const got: SipMessage[] = [];
    sock.on('data', (d: Buffer) => {
      for (const m of framer.push(d).messages) {
        const p = parseMessage(m);
        if (p.ok) got.push(p.msg);
      }
    });
    try {
      const opts = [
        `OPTIONS sip:[::1]:${engine.port};transport=tcp SIP/2.0`,
        `Via: SIP/2.0/TCP [::1]:5999;branch=z9hG4bK${newId()};rport`,
        'From: <sip:probe@[::1]>;tag=p1',
        'To: <sip:gw@[::1]>',
        `Call-ID: ${newId()}`,
        'CSeq: 1 OPTIONS',
        'Max-Forwards: 70',
        'Content-Length: 0',
        '',
        '',
      ].join('\r\n');
      sock.write(opts);
      await waitFor(() => got.length === 1, 3000, '200 to OPTIONS over TCP/IPv6');
      const res = got[0]!;
      expect(res.kind === 'response' && res.status).toBe(200);
      expect(res.headers.get('via')).toMatch(
        new RegExp(`^SIP/2\\.0/TCP \\[::1\\]:5999;branch=\\w+;rport=${sock.localPort};received=::1$`),
      );
    } finally {
      sock.destroy();
    }
  });

  it('an IPv4-only engine refuses an IPv6 target at once with a clear error', async () => {
    rig = await EngineRig.start();
    const err = (await rig.engine
      .invite({ uri: 'sip:+250788123456@[::1]:5070', from: '+250700000001', sdp: sdpOffer(40000), timeoutMs: 2000 })
      .catch((e: unknown) => e)) as GatewayError;
    expect(err.code).toBe('config_invalid');
    expect(err.message).toMatch(/cannot reach IPv6 ::1: sip\.host is IPv4/);
  });

  it('bound to :: (dual stack): an IPv4 carrier is answered over IPv4 with received=127.0.0.1, an IPv4 Contact', async () => {
    rig = await EngineRig.start({ host: '::' });
    const engine = rig.engine;
    const peer = await rig.peer();
    const callId = newId();
    peer.send(request({ callId, localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    await waitFor(() => rig!.invites.length === 1, 3000, 'INVITE over IPv4');
    const trying = await peer.waitFor(isRes(100, 'INVITE'), 3000, '100');
    expect(trying.headers.get('via')).toMatch(new RegExp(`;rport=${peer.port};received=127\\.0\\.0\\.1$`));
    rig.invites[0]!.reject(486);
    const busy = await peer.waitFor(isRes(486, 'INVITE'), 3000, '486');
    expect(parseMessage(serialize(busy)).ok).toBe(true);
    expect(busy.headers.get('call-id')).toBe(callId);
  });
});
