import { afterEach, describe, expect, it } from 'vitest';
import type { GatewayError } from '../../src/core/errors.js';
import { EmbeddedSipEngine } from '../../src/sip/embedded.js';
import { makeResponse, serialize, tagOf, type SipMessage, type SipRequest } from '../../src/sip/message.js';
import { parseRAck } from '../../src/sip/prack.js';
import { sleep, waitFor } from '../support/gateway.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { EngineRig, RIG_T1 } from '../peers/sip/engine-rig.js';

/** RFC 3262 reliable provisional responses, both sides, against a raw UDP peer (T1 = 50 ms). */
const T1 = RIG_T1;
let rig: EngineRig | undefined;
let engine: EmbeddedSipEngine | undefined;
afterEach(async () => {
  await rig?.stop();
  rig = engine = undefined;
});

async function setup() {
  rig = await EngineRig.start();
  engine = rig.engine;
  return { engine, peer: await rig.peer(), invites: rig.invites };
}

const ringing = (p: RawSipPeer) => p.responses(180, 'INVITE');

function prack(p: RawSipPeer, e: EmbeddedSipEngine, callId: string, toTag: string, rack: string, cseq = 2): void {
  p.send(
    request({ callId, method: 'PRACK', cseq, toTag, localPort: p.port, targetPort: e.port, extra: [`RAck: ${rack}`] }),
    e.port,
  );
}

/** An INVITE with an audio offer from the peer to the engine, with one 100rel header. */
function invite(p: RawSipPeer, e: EmbeddedSipEngine, callId: string, rel: string): void {
  p.send(request({ callId, localPort: p.port, targetPort: e.port, sdp: sdpOffer(4000), extra: [rel] }), e.port);
}

describe('RFC 3262 as UAS (inbound INVITE)', () => {
  it('Require: 100rel: the 180 carries RSeq and Require, is resent with T1 doubling until the PRACK; the 200 waits for it', async () => {
    const { engine, peer, invites } = await setup();
    const callId = newId();
    invite(peer, engine, callId, 'Require: 100rel');
    await waitFor(() => invites.length === 1, 2000, 'invite'); // no 420 any more
    expect(peer.responses(420)).toHaveLength(0);
    const inv = invites[0]!;
    const t0 = performance.now();
    inv.progress(180);
    const answered = inv.answer('v=0\r\n'); // must not go out before the PRACK
    await waitFor(() => ringing(peer).length >= 4, 5000, 'four 180s'); // at 0, 50, 150, 350 ms
    const sent = ringing(peer).slice(0, 4);
    // T1 doubling. The peer shares this event loop, so two 180s can be read together after a stall
    // (arrival gaps prove nothing); the k-th can never arrive before its send, (2^k − 1)·T1 after t0.
    sent.slice(1).forEach((r, i) => expect(r.at - t0).toBeGreaterThanOrEqual(T1 * (2 ** (i + 1) - 1) - 2));
    const first = sent[0]!.msg;
    expect(first.headers.get('require')).toBe('100rel');
    const rseq = Number(first.headers.get('rseq'));
    expect(rseq).toBeGreaterThan(0);
    expect(peer.responses(200, 'INVITE')).toHaveLength(0);
    const toTag = tagOf(first.headers.get('to'))!;
    prack(peer, engine, callId, toTag, `${rseq + 5} 1 INVITE`); // wrong RSeq
    await peer.waitFor((m) => m.kind === 'response' && m.status === 481 && !!m.headers.get('cseq')?.endsWith('PRACK'));
    prack(peer, engine, callId, toTag, `${rseq} 1 INVITE`, 3);
    await peer.waitFor((m) => m.kind === 'response' && m.status === 200 && m.headers.get('cseq') === '3 PRACK');
    const ok = await peer.waitFor(
      (m) => m.kind === 'response' && m.status === 200 && m.headers.get('cseq') === '1 INVITE',
    );
    expect(ok.headers.get('supported')).toContain('100rel');
    const n = ringing(peer).length;
    await sleep(T1 * 5);
    expect(ringing(peer).length).toBe(n); // PRACKed: no more 180s
    peer.send(request({ callId, method: 'ACK', toTag, localPort: peer.port, targetPort: engine.port }), engine.port);
    await expect(answered).resolves.toBeTruthy();
  });

  it('no PRACK within 64·T1: the INVITE is rejected with 500, answer() rejects, a failed event tells the front', async () => {
    const { engine, peer, invites } = await setup();
    const callId = newId();
    invite(peer, engine, callId, 'Supported: 100rel');
    await waitFor(() => invites.length === 1, 2000, 'invite');
    const inv = invites[0]!;
    const failed = new Promise<string>((r) => inv.once('failed', r));
    inv.progress(180);
    const answered = inv.answer('v=0\r\n').catch((e: unknown) => e as GatewayError);
    const final = await peer.waitFor(
      (m) => m.kind === 'response' && m.status >= 500 && m.headers.get('call-id') === callId,
      64 * T1 + 2000,
      '5xx',
    );
    expect(final.kind === 'response' && final.status).toBe(500);
    expect(await failed).toMatch(/no PRACK/);
    expect(((await answered) as GatewayError).code).toBe('timeout');
    expect(peer.responses(200, 'INVITE')).toHaveLength(0);
  });

  it('RAck parsing rejects garbage', () => {
    expect(parseRAck('776656 1 INVITE')).toEqual({ rseq: 776656, cseq: 1, method: 'INVITE' });
    expect(parseRAck('x 1 INVITE')).toBeUndefined();
    expect(parseRAck('1 2')).toBeUndefined();
    expect(parseRAck(undefined)).toBeUndefined();
  });
});

describe('RFC 3262 as UAC (our outbound INVITE)', () => {
  it('a reliable 183 gets one PRACK with RAck in its early dialog; later requests use higher CSeqs', async () => {
    const { engine, peer } = await setup();
    const result = engine.invite({
      uri: `sip:+250788123456@127.0.0.1:${peer.port}`,
      from: '+250700000001',
      sdp: sdpOffer(40000),
      timeoutMs: 5000,
    });
    const inv = await peer.waitFor((m) => m.kind === 'request' && m.method === 'INVITE');
    expect(inv.headers.get('supported')).toContain('100rel');
    const inviteCseq = Number(inv.headers.get('cseq')!.split(' ')[0]);
    const send = (status: number, extra: Record<string, string>, body = '') => {
      const res = makeResponse(inv as SipRequest, status, undefined, 'far1');
      res.headers.set('contact', `<sip:peer@127.0.0.1:${peer!.port}>`);
      for (const [k, v] of Object.entries(extra)) res.headers.set(k, v);
      if (body) {
        res.headers.set('content-type', 'application/sdp');
        res.body = body;
      }
      peer!.send(serialize(res).toString('latin1'), engine.port);
    };
    send(183, { require: '100rel', rseq: '41' });
    const pr = await peer.waitFor((m) => m.kind === 'request' && m.method === 'PRACK', 2000, 'PRACK');
    expect(pr.headers.get('rack')).toBe(`41 ${inviteCseq} INVITE`);
    expect(tagOf(pr.headers.get('to'))).toBe('far1');
    expect(pr.kind === 'request' && pr.uri).toBe(`sip:peer@127.0.0.1:${peer.port}`);
    const prCseq = Number(pr.headers.get('cseq')!.split(' ')[0]);
    expect(prCseq).toBeGreaterThan(inviteCseq);
    peer.reply(pr, 200, 'OK', engine.port);
    send(183, { require: '100rel', rseq: '41' }); // a retransmission: not PRACKed again
    await sleep(T1 * 3); // negative window: no new PRACK transaction for the retransmitted 183
    // One PRACK transaction: a retransmission of it (our 200 read late on a loaded box) keeps its CSeq.
    const pracks = peer.received.filter((r) => r.msg.kind === 'request' && r.msg.method === 'PRACK');
    expect(new Set(pracks.map((r) => r.msg.headers.get('cseq')))).toEqual(new Set([`${prCseq} PRACK`]));
    send(200, {}, sdpOffer(40002));
    const { dialog } = await result;
    const ack = await peer.waitFor((m) => m.kind === 'request' && m.method === 'ACK');
    expect(ack.headers.get('cseq')).toBe(`${inviteCseq} ACK`);
    void dialog.bye('done');
    const bye = await peer.waitFor((m: SipMessage) => m.kind === 'request' && m.method === 'BYE');
    expect(Number(bye.headers.get('cseq')!.split(' ')[0])).toBeGreaterThan(prCseq);
    peer.reply(bye, 200, 'OK', engine.port);
  });
});
