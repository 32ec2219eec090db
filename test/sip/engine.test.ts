import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedSipEngine, SipStreamFramer } from '../../src/sip/embedded.js';
import type { IncomingInvite, SipDialog } from '../../src/sip/engine.js';
import { parseMessage, tagOf } from '../../src/sip/message.js';
import { sleep, waitFor } from '../support/gateway.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { EngineRig, RIG_T1 } from '../peers/sip/engine-rig.js';

const T1 = RIG_T1;
let rig: EngineRig | undefined;
let engine: EmbeddedSipEngine | undefined;
let peer: RawSipPeer | undefined;
afterEach(async () => {
  await rig?.stop();
  rig = engine = peer = undefined;
});

async function setup(): Promise<{ engine: EmbeddedSipEngine; peer: RawSipPeer; invites: IncomingInvite[] }> {
  rig = await EngineRig.start();
  engine = rig.engine;
  peer = await rig.peer();
  return { engine, peer, invites: rig.invites };
}

/**
 * The engine handles datagrams in arrival order and answers on one socket: once an OPTIONS sent
 * after X is answered, X has been handled and everything sent before it has reached the peer.
 */
async function handled(p: RawSipPeer, e: EmbeddedSipEngine): Promise<void> {
  const callId = newId();
  p.send(request({ callId, method: 'OPTIONS', localPort: p.port, targetPort: e.port }), e.port);
  await p.waitFor((m) => m.kind === 'response' && m.headers.get('call-id') === callId, 5000, 'OPTIONS barrier');
}

/** Longer than the largest retransmission interval (T2 = 4·T1): a live timer would have fired. */
const QUIET = T1 * 6;

describe('embedded SIP engine: transactions and dialogs (raw UDP peer, T1 = 50 ms)', () => {
  it('retransmits the 200 OK at T1, 2·T1, 4·T1 (capped at T2) until the ACK, then stops', async () => {
    const { engine, peer, invites } = await setup();
    const callId = newId();
    const invite = request({ callId, localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) });
    peer.send(invite, engine.port);
    await waitFor(() => invites.length === 1, 2000, 'invite');
    peer.send(invite, engine.port); // retransmitted INVITE: absorbed, no second call
    await waitFor(() => peer.responses(100).length === 2, 3000, 'our 100 resent for the retransmission');
    expect(invites).toHaveLength(1);
    const t0 = performance.now();
    const dialogP = invites[0]!.answer('v=0\r\n');
    // Sends at 0, 50, 150, 350: wait for the fourth (a busy machine may run timers late). The peer
    // shares this event loop, so two sends can be read together after a stall: arrival gaps prove
    // nothing, but the k-th arrival can never precede its scheduled send (2^k − 1)·T1 after t0.
    await waitFor(() => peer.responses(200, 'INVITE').length >= 4, 5000, 'four 200 OKs');
    const oks = peer.responses(200, 'INVITE').slice(0, 4);
    oks.slice(1).forEach((o, i) => expect(o.at - t0).toBeGreaterThanOrEqual(T1 * (2 ** (i + 1) - 1) - 2));
    const toTag = tagOf(oks[0]!.msg.headers.get('to'));
    peer.send(request({ callId, method: 'ACK', toTag, localPort: peer.port, targetPort: engine.port }), engine.port);
    const dialog = await dialogP;
    expect(dialog.callId).toBe(callId);
    // The ACK ended the 2xx retransmission: no INVITE context (and so no timer) is left to resend it.
    expect(engine.activeState).toMatchObject({ invites: 0, dialogs: 1 });
  });

  it('no ACK within 64·T1: gives up, rejects the answer and sends BYE', async () => {
    const { engine, peer, invites } = await setup();
    const callId = newId();
    peer.send(request({ callId, localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) }), engine.port);
    await waitFor(() => invites.length === 1, 2000, 'invite');
    const t0 = performance.now();
    await expect(invites[0]!.answer('v=0\r\n')).rejects.toThrow(/no ACK/);
    expect(performance.now() - t0).toBeGreaterThan(64 * T1 - 20);
    const bye = await peer.waitFor((m) => m.kind === 'request' && m.method === 'BYE', 1000, 'BYE');
    expect(bye.headers.get('call-id')).toBe(callId);
    expect(engine.activeState).toMatchObject({ dialogs: 0, invites: 0 });
  });

  it('CANCEL: 200 to the CANCEL, 487 to the INVITE (retransmitted until ACK), cancel event', async () => {
    const { engine, peer, invites } = await setup();
    const callId = newId();
    const branch = `z9hG4bK${newId()}`;
    peer.send(
      request({ callId, branch, localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) }),
      engine.port,
    );
    await waitFor(() => invites.length === 1, 2000, 'invite');
    let cancelled = false;
    invites[0]!.on('cancel', () => (cancelled = true));
    peer.send(
      request({ callId, branch, method: 'CANCEL', localPort: peer.port, targetPort: engine.port }),
      engine.port,
    );
    await peer.waitFor((m) => m.kind === 'response' && m.status === 487, 1000, '487');
    expect(peer.responses(200, 'CANCEL')).toHaveLength(1);
    expect(cancelled).toBe(true);
    await waitFor(() => peer.responses(487).length > 1, 3000, '487 retransmitted (timer G until ACK)');
    peer.send(request({ callId, branch, method: 'ACK', localPort: peer.port, targetPort: engine.port }), engine.port);
    await handled(peer, engine);
    const n = peer.responses(487).length;
    await sleep(QUIET); // negative window after the ACK was handled: no more 487s
    expect(peer.responses(487).length).toBe(n);
    await expect(invites[0]!.answer('v=0')).rejects.toThrow(/cancelled/);
    // CANCEL for an unknown transaction: 481.
    peer.send(request({ method: 'CANCEL', localPort: peer.port, targetPort: engine.port }), engine.port);
    await peer.waitFor((m) => m.kind === 'response' && m.status === 481, 1000, '481');
  });

  async function established(): Promise<{ dialog: SipDialog; callId: string; toTag: string }> {
    const { peer } = await setup();
    return rig!.established(peer);
  }

  it('BYE from the carrier: 200 and a bye event; in-dialog requests after it get 481', async () => {
    const { dialog, callId, toTag } = await established();
    let byes = 0;
    dialog.on('bye', () => byes++);
    peer!.send(
      request({ callId, toTag, cseq: 2, method: 'BYE', localPort: peer!.port, targetPort: engine!.port }),
      engine!.port,
    );
    await peer!.waitFor((m) => m.kind === 'response' && m.status === 200 && m.headers.get('cseq') === '2 BYE');
    expect(byes).toBe(1);
    peer!.send(
      request({ callId, toTag, cseq: 3, method: 'BYE', localPort: peer!.port, targetPort: engine!.port }),
      engine!.port,
    );
    await peer!.waitFor((m) => m.kind === 'response' && m.status === 481);
    expect(engine!.activeState.dialogs).toBe(0);
  });

  it('re-INVITE is offered to the front and its 200 is retransmitted until ACK', async () => {
    const { dialog, callId, toTag } = await established();
    dialog.on('modify', (req) => req.respond({ sdp: req.sdp!.replace('a=sendonly', 'a=recvonly') }));
    peer!.send(
      request({
        callId,
        toTag,
        cseq: 2,
        localPort: peer!.port,
        targetPort: engine!.port,
        sdp: sdpOffer(4000, 'sendonly'),
      }),
      engine!.port,
    );
    const ok = await peer!.waitFor(
      (m) => m.kind === 'response' && m.status === 200 && m.headers.get('cseq') === '2 INVITE',
    );
    expect(ok.body).toContain('a=recvonly');
    await waitFor(() => peer!.responses(200, '2 INVITE').length > 1, 3000, 're-INVITE 200 retransmitted');
    peer!.send(
      request({ callId, toTag, cseq: 2, method: 'ACK', localPort: peer!.port, targetPort: engine!.port }),
      engine!.port,
    );
    await handled(peer!, engine!);
    const n = peer!.responses(200, '2 INVITE').length;
    await sleep(QUIET); // negative window after the ACK was handled: no more 200s
    expect(peer!.responses(200, '2 INVITE').length).toBe(n);
  });

  it('REFER: resolves on 202, rejects on 4xx and on timeout; BYE from us is retransmitted until answered', async () => {
    const { dialog } = await established();
    const p1 = dialog.refer('sip:+250788000000@127.0.0.1');
    const refer = await peer!.waitFor((m) => m.kind === 'request' && m.method === 'REFER');
    expect(refer.headers.get('refer-to')).toBe('<sip:+250788000000@127.0.0.1>');
    expect(refer.kind === 'request' && refer.uri).toBe(`sip:carrier@127.0.0.1:${peer!.port}`);
    const reply = (req: typeof refer, status: number, reason: string) => peer!.reply(req, status, reason, engine!.port);
    reply(refer, 202, 'Accepted');
    await p1;
    const p2 = dialog.refer('sip:x@127.0.0.1');
    const r2 = await peer!.waitFor((m) => m.kind === 'request' && m.method === 'REFER' && m !== refer);
    reply(r2, 403, 'Forbidden');
    await expect(p2).rejects.toThrow(/403/);
    await expect(dialog.refer('sip:y@127.0.0.1', 200)).rejects.toThrow(/no final response/);
    const byeP = dialog.bye('test');
    const byeSends = () => peer!.received.filter((r) => r.msg.kind === 'request' && r.msg.method === 'BYE');
    await waitFor(() => byeSends().length > 1, 3000, 'BYE retransmitted');
    const byes = byeSends();
    reply(byes[0]!.msg, 200, 'OK');
    await byeP;
    expect(engine!.activeState).toEqual({ dialogs: 0, invites: 0, clientTxs: 0 });
  });

  it('OPTIONS → 200 with Allow; unsupported Require → 420; REGISTER → 405', async () => {
    const { engine, peer } = await setup();
    peer.send(request({ method: 'OPTIONS', localPort: peer.port, targetPort: engine.port }), engine.port);
    const ok = await peer.waitFor((m) => m.kind === 'response' && m.status === 200);
    expect(ok.headers.get('allow')).toContain('REFER');
    peer.send(
      request({ localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000), extra: ['Require: precondition'] }),
      engine.port,
    );
    const bad = await peer.waitFor((m) => m.kind === 'response' && m.status === 420);
    expect(bad.headers.get('unsupported')).toBe('precondition');
    peer.send(request({ method: 'REGISTER', localPort: peer.port, targetPort: engine.port }), engine.port);
    await peer.waitFor((m) => m.kind === 'response' && m.status === 405);
  });

  it('survives 2000 random/mutated datagrams without throwing and still answers', async () => {
    const { engine, peer } = await setup();
    const base = request({ localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) });
    let seed = 42;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.from(base, 'latin1');
      if (i % 3 === 0) for (let k = 0; k < 10; k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      else if (i % 3 === 1) b.fill(Math.floor(rnd() * 256), Math.floor(rnd() * b.length));
      const cut = i % 3 === 2 ? b.subarray(0, Math.floor(rnd() * b.length)) : b;
      peer.send(cut.toString('latin1'), engine.port);
      // In steps of 20, each taken in before the next (a burst of 2000 would overflow the socket buffer).
      if (i % 20 === 19) await waitFor(() => engine.counters.received === i + 1, 3000, `datagram ${i + 1}`);
    }
    expect(parseMessage(Buffer.from([0, 1, 2])).ok).toBe(false);
    peer.send(request({ method: 'OPTIONS', localPort: peer.port, targetPort: engine.port }), engine.port);
    await peer.waitFor((m) => m.kind === 'response' && m.status === 200 && m.headers.get('cseq') === '1 OPTIONS');
    // The mutations are seeded, so which datagrams cannot be parsed is fixed: the unparseable count
    // is exact. (badRequests depends on flood admission of the parseable ones, which is timed.)
    expect(engine.counters.malformed).toBe(1616);
  });

  it('TCP framing: messages split across chunks, CRLF keep-alives, oversize streams cut off', () => {
    const f = new SipStreamFramer();
    const msg = 'OPTIONS sip:x SIP/2.0\r\nContent-Length: 4\r\n\r\nbody';
    const both = Buffer.from(`\r\n\r\n${msg}${msg}`, 'latin1');
    const parts = [both.subarray(0, 10), both.subarray(10, 50), both.subarray(50)];
    const got = parts.flatMap((p) => f.push(p).messages.map((m) => m.toString('latin1')));
    expect(got).toEqual([msg, msg]);
    expect(new SipStreamFramer().push(Buffer.from(`INVITE sip:x SIP/2.0\r\nl: 999999\r\n\r\n`)).error).toBe(
      'body too long',
    );
    expect(new SipStreamFramer().push(Buffer.alloc(70_000, 0x41)).error).toBe('headers too long');
  });
});
