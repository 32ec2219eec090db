import { testLogger } from '../../src/core/logger.js';
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { TrunkConfig } from '../../src/config/schema.js';
import { l16 } from '../../src/core/audio/format.js';
import type { GatewayError } from '../../src/core/errors.js';
import { buildFronts } from '../../src/fronts.js';
import { Gateway } from '../../src/gateway.js';
import { trunkTarget } from '../../src/sip/dialer.js';
import { EmbeddedSipEngine } from '../../src/sip/embedded.js';
import type { SipDialog } from '../../src/sip/engine.js';
import { SipFront } from '../../src/sip/front.js';
import { makeResponse, parseVia, serialize, tagOf, type SipMessage, type SipRequest } from '../../src/sip/message.js';
import { readOffer } from '../../src/sip/sdp.js';
import { dominantFrequency, loudestToneDb } from '../support/audio.js';
import { api, loopbackSipConfig, sleep, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { ToneAi } from '../peers/tone-ai.js';
import { RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { RawSipPeer, sdpOffer } from '../peers/sip/udp-peer.js';
import { EngineRig, RIG_T1 } from '../peers/sip/engine-rig.js';
import { leasePortRange } from '../support/ports.js';

const T1 = RIG_T1;
const OFFER = sdpOffer(40000, 'sendrecv', '0 101');
let rig: EngineRig | undefined;
let engine: EmbeddedSipEngine | undefined;
let peer: RawSipPeer | undefined;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await rig?.stop();
  rig = engine = peer = undefined;
});

async function setup(): Promise<{ engine: EmbeddedSipEngine; peer: RawSipPeer; uri: string }> {
  rig = await EngineRig.start();
  engine = rig.engine;
  peer = await rig.peer();
  return { engine, peer, uri: `sip:+250788123456@127.0.0.1:${peer.port};transport=udp` };
}

const isReq = (method: string) => (m: SipMessage) => m.kind === 'request' && m.method === method;
const requests = (p: RawSipPeer, method: string) =>
  p.received.filter((r) => r.msg.kind === 'request' && r.msg.method === method);
const branchOf = (m: SipMessage) => parseVia(m.headers.get('via')!)!.params.branch;
const cseqNum = (m: SipMessage) => Number(m.headers.get('cseq')!.split(' ')[0]);

function reply(p: RawSipPeer, req: SipMessage, status: number, toTag?: string, body?: string): void {
  const res = makeResponse(req as SipRequest, status, undefined, toTag);
  if (body) {
    res.headers.set('contact', `<sip:peer@127.0.0.1:${p.port}>`);
    res.headers.set('content-type', 'application/sdp');
    res.body = body;
  }
  p.send(serialize(res).toString('latin1'), engine!.port);
}

describe('SIP UAC in the embedded engine (raw UDP peer, T1 = 50 ms)', () => {
  it('retransmits the INVITE at T1 doubling to a silent peer and gives up at timer B (64·T1), without CANCEL', async () => {
    const { engine, peer, uri } = await setup();
    const t0 = performance.now();
    const err = (await engine
      .invite({ uri, from: '+250700000001', sdp: OFFER, timeoutMs: 10_000 })
      .catch((e: unknown) => e)) as GatewayError;
    const elapsed = performance.now() - t0;
    expect(err.code).toBe('timeout');
    expect(err.message).toMatch(/no response to INVITE within 3200 ms/);
    expect(elapsed).toBeGreaterThan(64 * T1 - 20);
    // Timer B, not the dial's own 10 s timeout (a loaded box delays timers, never hastens them).
    expect(elapsed).toBeLessThan(10_000);
    const invites = requests(peer, 'INVITE');
    // Sent at 0, 50, 150, 350, 750, 1550, 3150 ms: timer A doubles with no T2 cap.
    expect(invites.length).toBeGreaterThanOrEqual(6);
    expect(invites.length).toBeLessThanOrEqual(7);
    // Timer A doubles: the k-th retransmission leaves no earlier than (2^k − 1)·T1 after the first
    // send. Arrival times can only lag a send, so only the lower bound holds on a loaded machine;
    // the count above bounds the schedule from the other side.
    invites.slice(1).forEach((r, i) => {
      expect(r.at - t0).toBeGreaterThanOrEqual(T1 * (2 ** (i + 1) - 1) - 5);
    });
    // The same transaction each time; nothing else sent (no CANCEL before a provisional).
    expect(new Set(invites.map((r) => branchOf(r.msg))).size).toBe(1);
    expect(peer.received.filter((r) => r.msg.kind === 'request' && r.msg.method !== 'INVITE')).toEqual([]);
    expect(engine.uacTxCount).toBe(0);
  });

  it('CANCELs when not answered within timeoutMs after a 180, ACKs the 487 (and its retransmission)', async () => {
    const { engine, peer, uri } = await setup();
    const t0 = performance.now();
    const dial = engine.invite({ uri, from: '+250700000001', sdp: OFFER, timeoutMs: 400 }).catch((e: unknown) => e);
    const inv = await peer.waitFor(isReq('INVITE'));
    reply(peer, inv, 180, 'ring1');
    const cancel = await peer.waitFor(isReq('CANCEL'), 2000, 'CANCEL');
    const err = (await dial) as GatewayError;
    expect(err.code).toBe('timeout');
    expect(err.message).toMatch(/not answered within 400 ms \(CANCEL sent\)/);
    expect(performance.now() - t0).toBeGreaterThan(380);
    // RFC 3261 §9.1: the CANCEL matches the INVITE's branch, Request-URI, Call-ID, From, To and CSeq number.
    const c = cancel as SipRequest;
    expect(branchOf(c)).toBe(branchOf(inv));
    expect(c.uri).toBe((inv as SipRequest).uri);
    expect(c.headers.get('cseq')).toBe(`${cseqNum(inv)} CANCEL`);
    for (const h of ['call-id', 'from', 'to']) expect(c.headers.get(h)).toBe(inv.headers.get(h));
    const invitesAfter180 = requests(peer, 'INVITE').length;
    reply(peer, cancel, 200);
    reply(peer, inv, 487, 'ring1');
    const ack = await peer.waitFor(isReq('ACK'), 2000, 'ACK for 487');
    expect(branchOf(ack)).toBe(branchOf(inv));
    expect(ack.headers.get('cseq')).toBe(`${cseqNum(inv)} ACK`);
    expect(tagOf(ack.headers.get('to'))).toBe('ring1');
    reply(peer, inv, 487, 'ring1'); // the 487 again (our ACK "lost"): ACKed again
    await waitFor(() => requests(peer, 'ACK').length === 2, 2000, 'second ACK');
    expect(requests(peer, 'INVITE').length).toBe(invitesAfter180); // no retransmission once proceeding
    await waitFor(() => engine.activeState.clientTxs === 0, 2000, 'CANCEL transaction done');
  });

  it('a non-2xx final is ACKed and rejects with a clear error carrying the status', async () => {
    const { engine, peer, uri } = await setup();
    const dial = engine
      .invite({ uri, from: '+250700000001', sdp: OFFER, timeoutMs: 5000, callId: 'call-486' })
      .catch((e: unknown) => e);
    const inv = await peer.waitFor(isReq('INVITE'));
    reply(peer, inv, 486, 'busy1');
    const err = (await dial) as GatewayError;
    expect(err.code).toBe('upstream');
    expect(err.callId).toBe('call-486');
    expect(err.message).toMatch(/refused: 486 Busy Here/);
    expect(err.details).toEqual({ status: 486, reason: 'Busy Here' });
    const ack = await peer.waitFor(isReq('ACK'), 1000, 'ACK');
    expect(branchOf(ack)).toBe(branchOf(inv));
    expect(tagOf(ack.headers.get('to'))).toBe('busy1');
    reply(peer, inv, 486, 'busy1');
    await waitFor(() => requests(peer, 'ACK').length === 2, 1000, 'ACK for the retransmitted 486');
    await sleep(4 * T1);
    expect(requests(peer, 'INVITE').length).toBe(1);
    expect(engine.activeState.dialogs).toBe(0);
  });

  it('2xx → ACK to the Contact (again for a retransmitted 2xx); BYE from us and from them', async () => {
    const { engine, peer, uri } = await setup();
    const headers = { 'X-Gateway-Call-Id': 'gw-1', 'P-Asserted-Identity': '<sip:+250700000001@gateway.invalid>' };
    const dial = engine.invite({ uri, from: '+250700000001', sdp: OFFER, timeoutMs: 5000, headers });
    const inv = (await peer.waitFor(isReq('INVITE'))) as SipRequest;
    expect(inv.uri).toBe(uri);
    expect(inv.headers.get('x-gateway-call-id')).toBe('gw-1');
    expect(inv.headers.get('p-asserted-identity')).toBe(headers['P-Asserted-Identity']);
    expect(inv.headers.get('from')).toMatch(/^<sip:\+250700000001@127\.0\.0\.1>;tag=\w+$/);
    expect(inv.headers.get('content-type')).toBe('application/sdp');
    expect(inv.body).toBe(OFFER);
    reply(peer, inv, 200, 'ans1', sdpOffer(40100, 'sendrecv', '0'));
    const res = await dial;
    expect(res.sdp).toMatch(/m=audio 40100 RTP\/AVP 0/);
    const ack = (await peer.waitFor(isReq('ACK'))) as SipRequest;
    expect(ack.uri).toBe(`sip:peer@127.0.0.1:${peer.port}`); // the 2xx's Contact
    expect(ack.headers.get('cseq')).toBe(`${cseqNum(inv)} ACK`);
    expect(branchOf(ack)).not.toBe(branchOf(inv)); // a 2xx ACK is its own transaction
    expect(tagOf(ack.headers.get('to'))).toBe('ans1');
    reply(peer, inv, 200, 'ans1', sdpOffer(40100, 'sendrecv', '0'));
    await waitFor(() => requests(peer, 'ACK').length === 2, 1000, 'ACK for the retransmitted 2xx');

    // BYE from us: in-dialog, CSeq above the INVITE's, to the Contact, their tag in To.
    let destroyed = false;
    res.dialog.on('destroyed', () => (destroyed = true));
    const byeP = res.dialog.bye('done');
    const bye = (await peer.waitFor(isReq('BYE'))) as SipRequest;
    expect(bye.uri).toBe(`sip:peer@127.0.0.1:${peer.port}`);
    expect(cseqNum(bye)).toBe(cseqNum(inv) + 1);
    expect(tagOf(bye.headers.get('to'))).toBe('ans1');
    expect(bye.headers.get('from')).toBe(inv.headers.get('from'));
    reply(peer, bye, 200);
    await byeP;
    expect(destroyed).toBe(true);

    // A second call; this time they hang up.
    const dial2 = engine.invite({ uri, from: '+250700000001', sdp: OFFER, timeoutMs: 5000 });
    await waitFor(() => requests(peer, 'INVITE').length === 2, 1000, 'second INVITE');
    const inv2 = requests(peer, 'INVITE')[1]!.msg as SipRequest;
    reply(peer, inv2, 200, 'ans2', sdpOffer(40200, 'sendrecv', '0'));
    const { dialog } = await dial2;
    const byeFromThem = await new Promise<SipDialog>((resolve) => {
      dialog.on('bye', () => resolve(dialog));
      const contact = /<([^>]+)>/.exec(inv2.headers.get('contact')!)![1]!;
      peer.send(
        [
          `BYE ${contact} SIP/2.0`,
          `Via: SIP/2.0/UDP 127.0.0.1:${peer.port};branch=z9hG4bKbye2;rport`,
          `From: ${inv2.headers.get('to')};tag=ans2`,
          `To: ${inv2.headers.get('from')}`,
          `Call-ID: ${inv2.headers.get('call-id')}`,
          'CSeq: 1 BYE',
          'Max-Forwards: 70',
          'Content-Length: 0',
          '',
          '',
        ].join('\r\n'),
        engine.port,
      );
    });
    expect(byeFromThem.callId).toBe(inv2.headers.get('call-id'));
    await waitFor(() => peer.responses(200, 'BYE').length === 1, 1000, '200 for their BYE');
    expect(engine.activeState.dialogs).toBe(0);
  });

  it('over TCP the INVITE is not retransmitted; a refused TLS connection fails the dial at once, naming the cause', async () => {
    const { engine } = await setup();
    let stream = '';
    const conns: Socket[] = [];
    const server: Server = createServer((c) => {
      conns.push(c);
      c.on('data', (d: Buffer) => (stream += d.toString('latin1')));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => {
      for (const s of conns) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    });
    const port = (server.address() as { port: number }).port;
    const err = (await engine
      .invite({ uri: `sip:x@127.0.0.1:${port};transport=tcp`, from: 'gw', sdp: OFFER, timeoutMs: 500 })
      .catch((e: unknown) => e)) as GatewayError;
    expect(err.code).toBe('timeout');
    expect(stream.match(/^INVITE /gm)).toHaveLength(1);
    expect(stream).toMatch(/Via: SIP\/2\.0\/TCP /);
    // Nothing listens on the closed port: the dial fails before any INVITE, with the socket error.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const closedPort = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const t0 = performance.now();
    const tls = (await engine
      .invite({ uri: `sip:proj_x@127.0.0.1:${closedPort};transport=tls`, from: 'gw', sdp: OFFER, timeoutMs: 5000 })
      .catch((e: unknown) => e)) as GatewayError;
    expect(tls.code).toBe('upstream');
    expect(tls.message).toMatch(/SIP tls connection to 127\.0\.0\.1:\d+ failed: .*ECONNREFUSED/);
    // Refused at once: well before the 5 s dial timeout (the message names ECONNREFUSED).
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(engine.streamConnections.tls).toBe(0);
  });
});

describe('trunk targets for outbound calls', () => {
  it('uses the trunk dialUri (number as user part), else its first allowed address on 5060', () => {
    const trunk = { name: 't', allow: ['196.12.0.10/32', '196.12.0.0/16'], countryCode: '250' } as TrunkConfig;
    expect(trunkTarget(trunk, '+250 788-123456')).toBe('sip:+250788123456@196.12.0.10');
    expect(trunkTarget({ ...trunk, dialUri: 'sip:10.0.0.5:5080;transport=tcp' }, '+250788123456')).toBe(
      'sip:+250788123456@10.0.0.5:5080;transport=tcp',
    );
  });
});

describe('POST /v1/calls {front: sip}: an outbound call over a trunk (real gateway, SIP phone peer)', () => {
  it('places the call, the phone answers, audio flows both ways, DELETE sends BYE and frees everything', async () => {
    // The called party: an embedded engine as a SIP phone playing 700 Hz.
    const phone = new EmbeddedSipEngine({ host: '127.0.0.1', port: 0, publicAddress: '127.0.0.1', log: testLogger() });
    const media = new RtpToneEndpoint(700);
    let phoneDialog: SipDialog | undefined;
    let byeAt = 0;
    let invited: { uri: string; from: string } | undefined;
    phone.on('invite', (inv) => {
      invited = { uri: inv.requestUri, from: inv.from };
      const offered = readOffer(inv.sdp ?? '', ['PCMA', 'PCMU'], true);
      if (!offered.ok) return inv.reject(488);
      inv.progress(180);
      void media.answer(offered.offer).then(async (sdp) => {
        phoneDialog = await inv.answer(sdp);
        phoneDialog.on('bye', () => (byeAt = Date.now()));
        media.startSending();
      });
    });
    await phone.start();
    cleanups.push(async () => {
      media.close();
      await phone.stop();
    });

    const [rtpMin] = leasePortRange(100);
    const config = parseConfig(
      {
        ...loopbackSipConfig(rtpMin, rtpMin + 19),
        api: { token: TEST_TOKEN },
        trunks: [
          {
            name: 'lab',
            allow: ['127.0.0.2/32'],
            countryCode: '250',
            nationalPrefix: '0',
            dialUri: `sip:127.0.0.1:${phone.port};transport=udp`,
          },
        ],
        routes: { local: { kind: 'local' } },
      },
      {},
    );
    const gw = new Gateway(config, testLogger());
    const sessions: ToneAi[] = [];
    gw.ctx.backends.register('local', () => ({
      kind: 'local',
      open(o) {
        const s = new ToneAi(440, { format: l16(8000), control: o.control });
        sessions.push(s);
        return s;
      },
    }));
    const fronts = buildFronts(gw.ctx);
    for (const f of fronts) gw.addFront(f);
    const front = fronts.find((f): f is SipFront => f instanceof SipFront)!;
    await gw.start();
    cleanups.push(() => gw.stop('test_done', 0));
    expect(gw.ctx.legDialer).toBe(front.dialer);

    const call = api(gw);
    const placed = await call('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'lab' });
    expect(placed.status, JSON.stringify(placed.body)).toBe(201);
    const id = placed.body.id as string;
    const c = gw.ctx.registry.get(id)!;
    expect(c.info).toMatchObject({ front: 'sip', direction: 'outbound', trunk: 'lab', to: '+250788123456' });
    await waitFor(() => c.state === 'bridged', 5000, 'outbound call bridged');
    expect(invited!.uri).toBe(`sip:+250788123456@127.0.0.1:${phone.port};transport=udp`);
    await waitFor(() => phoneDialog !== undefined, 2000, 'the phone saw our ACK'); // the ACK is still in flight
    expect(c.info.externalId).toBe(phoneDialog!.callId);
    // 1.2 s each way past the 10 skipped frames (media may start late on a loaded box).
    await waitFor(
      () => media.heard(10).length >= 9600 && sessions[0]!.heardPcm(10).length >= 9600,
      10_000,
      'audio both ways',
    );

    // Audio both ways: the phone hears the AI's 440 Hz; the AI hears the phone's 700 Hz.
    const atPhone = media.heard(10);
    expect(atPhone.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(atPhone, 8000) - 440) / 440).toBeLessThan(0.02);
    expect(loudestToneDb(atPhone, 8000, 440)).toBeGreaterThan(-20);
    const atAi = sessions[0]!.heardPcm(10);
    expect(atAi.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(atAi, 8000) - 700) / 700).toBeLessThan(0.02);

    const hung = await call('DELETE', `/v1/calls/${id}`, { reason: 'test over' });
    expect(hung.status).toBe(200);
    await waitFor(() => byeAt > 0, 3000, 'BYE at the phone');
    expect(c.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
    await waitFor(() => front.ports.used === 0 && front.dialer!.activeCount === 0, 3000, 'ports released');
  });

  it('a refused outbound call ends with the status; an unanswered one is CANCELled when deleted', async () => {
    const phone = new EmbeddedSipEngine({ host: '127.0.0.1', port: 0, publicAddress: '127.0.0.1', log: testLogger() });
    let cancelled = 0;
    let rung = 0;
    phone.on('invite', (inv) => {
      if (inv.requestUri.includes('+250788000486')) return inv.reject(486);
      inv.progress(180);
      rung++;
      inv.on('cancel', () => cancelled++);
    });
    await phone.start();
    cleanups.push(() => phone.stop());
    const [rtpMin] = leasePortRange(100);
    const config = parseConfig(
      {
        ...loopbackSipConfig(rtpMin, rtpMin + 19),
        api: { token: TEST_TOKEN },
        trunks: [{ name: 'lab', allow: ['127.0.0.1/32'], countryCode: '250', dialUri: `sip:127.0.0.1:${phone.port}` }],
        routes: { local: { kind: 'local' } },
      },
      {},
    );
    const gw = new Gateway(config, testLogger());
    const fronts = buildFronts(gw.ctx);
    for (const f of fronts) gw.addFront(f);
    const front = fronts.find((f): f is SipFront => f instanceof SipFront)!;
    await gw.start();
    cleanups.push(() => gw.stop('test_done', 0));
    const call = api(gw);

    const busy = await call('POST', '/v1/calls', { front: 'sip', to: '+250788000486' });
    const b = gw.ctx.registry.get(busy.body.id as string) ?? undefined;
    await waitFor(() => !b || b.ended, 3000, 'busy call ended');
    const rec = await call('GET', `/v1/calls/${busy.body.id as string}`);
    expect(rec.body.endReason).toMatchObject({ by: 'remote', cause: 'rejected' });

    const ringing = await call('POST', '/v1/calls', { front: 'sip', to: '+250788000001' });
    const r = gw.ctx.registry.get(ringing.body.id as string)!;
    await waitFor(() => rung === 1, 5000, 'the phone ringing');
    expect(r.state).toBe('ringing');
    await call('DELETE', `/v1/calls/${r.id}`, {});
    await waitFor(() => cancelled === 1, 2000, 'CANCEL at the phone');
    expect(r.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
    await waitFor(() => front.ports.used === 0 && front.dialer!.activeCount === 0, 3000, 'ports released');
  });
});
