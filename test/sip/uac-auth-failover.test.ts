import { afterEach, describe, expect, it } from 'vitest';
import type { GatewayError } from '../../src/core/errors.js';
import { DigestAuthenticator } from '../../src/sip/digest.js';
import { EmbeddedSipEngine } from '../../src/sip/embedded.js';
import { makeResponse, parseVia, serialize, type SipMessage, type SipRequest } from '../../src/sip/message.js';
import type { SipDnsResolver } from '../../src/sip/srv.js';
import { RawSipPeer, sdpOffer } from '../peers/sip/udp-peer.js';
import { EngineRig } from '../peers/sip/engine-rig.js';

/** Outbound INVITEs: digest challenges answered with the trunk's credentials, RFC 3263 failover. */
const OFFER = sdpOffer(40000, 'sendrecv', '0 101');
let rig: EngineRig | undefined;
let engine: EmbeddedSipEngine | undefined;
afterEach(async () => {
  await rig?.stop();
  rig = engine = undefined;
});

async function setup(n: number): Promise<{ engine: EmbeddedSipEngine; peers: RawSipPeer[] }> {
  rig = await EngineRig.start();
  engine = rig.engine;
  const peers: RawSipPeer[] = [];
  for (let i = 0; i < n; i++) peers.push(await rig.peer());
  return { engine, peers };
}

function reply(p: RawSipPeer, req: SipMessage, status: number, extra: Record<string, string> = {}, body = ''): void {
  const res = makeResponse(req as SipRequest, status, undefined, 'peertag');
  for (const [k, v] of Object.entries(extra)) res.headers.set(k, v);
  if (body) {
    res.headers.set('contact', `<sip:peer@127.0.0.1:${p.port}>`);
    res.headers.set('content-type', 'application/sdp');
    res.body = body;
  }
  p.send(serialize(res).toString('latin1'), engine!.port);
}

const invites = (p: RawSipPeer) => p.received.filter((r) => r.msg.kind === 'request' && r.msg.method === 'INVITE');
const isInvite = (m: SipMessage) => m.kind === 'request' && m.method === 'INVITE';

/** SRV for carrier.test → the peers in order, each on its own port. */
function srvTo(ports: number[]): SipDnsResolver {
  return {
    resolveSrv: (name) =>
      name === '_sip._udp.carrier.test'
        ? Promise.resolve(ports.map((port, i) => ({ name: `sbc${i}.carrier.test`, port, priority: i, weight: 0 })))
        : Promise.reject(new Error('ENODATA')),
    addresses: () => Promise.resolve(['127.0.0.1']),
  };
}

describe('UAC: 401/407 with trunk credentials, RFC 3263 failover', () => {
  it('answers a 407 once: ACKs it, same Call-ID and From tag, CSeq + 1, Proxy-Authorization the server accepts', async () => {
    const { engine, peers } = await setup(1);
    const p = peers[0]!;
    const server = new DigestAuthenticator();
    const creds = { realm: 'carrier', username: 'gw1', password: 'pw' };
    const result = engine.invite({
      uri: `sip:+250788@127.0.0.1:${p.port}`,
      from: '<sip:gw1@carrier.test>',
      sdp: OFFER,
      timeoutMs: 5000,
      credentials: { username: 'gw1', password: 'pw' },
    });
    const first = await p.waitFor(isInvite);
    reply(p, first, 407, { 'proxy-authenticate': server.challenge('carrier') });
    await p.waitFor((m) => m.kind === 'request' && m.method === 'ACK', 3000, 'ACK of the 407');
    const second = await p.waitFor((m) => isInvite(m) && m.headers.has('proxy-authorization'), 3000, 'INVITE 2');
    expect(second.headers.get('call-id')).toBe(first.headers.get('call-id'));
    expect(second.headers.get('from')).toBe(first.headers.get('from'));
    expect(second.headers.get('cseq')).toBe(`${Number(first.headers.get('cseq')!.split(' ')[0]) + 1} INVITE`);
    expect(parseVia(second.headers.get('via')!)!.params.branch).not.toBe(
      parseVia(first.headers.get('via')!)!.params.branch,
    );
    expect(server.verify(second.headers.get('proxy-authorization'), 'INVITE', creds)).toEqual({ ok: true });
    reply(p, second, 200, {}, OFFER);
    const r = await result;
    expect(r.status).toBe(200);
    await r.dialog.bye();
  });

  it('a second challenge after our credentials is a refusal: no loop, the dial fails with 401', async () => {
    const { engine, peers } = await setup(1);
    const p = peers[0]!;
    const server = new DigestAuthenticator();
    const result = engine
      .invite({
        uri: `sip:+250788@127.0.0.1:${p.port}`,
        from: 'gw1',
        sdp: OFFER,
        timeoutMs: 5000,
        credentials: { username: 'gw1', password: 'wrong' },
      })
      .catch((e: unknown) => e as GatewayError);
    // Timer A (T1 = 50 ms) retransmits: tell the two INVITEs apart by their credentials.
    const first = await p.waitFor(isInvite, 3000, 'INVITE 1');
    reply(p, first, 401, { 'www-authenticate': server.challenge('carrier') });
    const second = await p.waitFor((m) => isInvite(m) && m.headers.has('authorization'), 3000, 'INVITE 2');
    reply(p, second, 401, { 'www-authenticate': server.challenge('carrier') });
    const err = (await result) as GatewayError;
    expect(err.message).toMatch(/401/);
    expect(err.details).toMatchObject({ status: 401 });
    expect(err.details).not.toHaveProperty('challenge');
    await new Promise((r) => setTimeout(r, 300));
    expect(new Set(invites(p).map((r) => r.msg.headers.get('cseq'))).size).toBe(2);
  });

  it('fails over along the SRV targets on 503 and on no answer (timer B), then completes on the third', async () => {
    const { engine, peers } = await setup(3);
    const [busy, silent, good] = peers as [RawSipPeer, RawSipPeer, RawSipPeer];
    const result = engine.invite({
      uri: 'sip:+250788@carrier.test',
      from: 'gw1',
      sdp: OFFER,
      timeoutMs: 20_000,
      resolver: srvTo([busy.port, silent.port, good.port]),
    });
    reply(busy, await busy.waitFor(isInvite), 503);
    await silent.waitFor(isInvite);
    const inv = await good.waitFor(isInvite, 8000, 'INVITE at the third target');
    reply(good, inv, 200, {}, OFFER);
    const r = await result;
    expect(r.dest.port).toBe(good.port);
    expect(invites(silent).length).toBeGreaterThanOrEqual(5); // timer A retransmissions until timer B
    expect(inv.headers.get('call-id')).toBe(invites(busy)[0]!.msg.headers.get('call-id'));
    await r.dialog.bye();
  });

  it('a final refusal other than 503 does not fail over', async () => {
    const { engine, peers } = await setup(2);
    const [a, b] = peers as [RawSipPeer, RawSipPeer];
    const result = engine
      .invite({
        uri: 'sip:+250788@carrier.test',
        from: 'gw1',
        sdp: OFFER,
        timeoutMs: 5000,
        resolver: srvTo([a.port, b.port]),
      })
      .catch((e: unknown) => e as GatewayError);
    reply(a, await a.waitFor(isInvite), 486);
    expect(((await result) as GatewayError).details).toMatchObject({ status: 486 });
    expect(invites(b)).toHaveLength(0);
  });
});
