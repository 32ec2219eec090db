import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedSipEngine } from '../../src/sip/embedded.js';
import type { IncomingInvite, SipDialog } from '../../src/sip/engine.js';
import {
  headerTokens,
  makeResponse,
  parseMessage,
  parseUri,
  sdpOf,
  tagOf,
  validateRequest,
  type SipRequest,
} from '../../src/sip/message.js';
import { userOf } from '../../src/sip/trunks.js';
import { sleep, waitFor } from '../support/gateway.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { EngineRig, RIG_T1 } from '../peers/sip/engine-rig.js';

const T1 = RIG_T1;
let rig: EngineRig | undefined;
let engine: EmbeddedSipEngine | undefined;
afterEach(async () => {
  await rig?.stop();
  rig = engine = undefined;
});

async function setup(): Promise<{ engine: EmbeddedSipEngine; peer: RawSipPeer; invites: IncomingInvite[] }> {
  rig = await EngineRig.start();
  engine = rig.engine;
  return { engine, peer: await newPeer(), invites: rig.invites };
}

const newPeer = (): Promise<RawSipPeer> => rig!.peer();

const req = (text: string): SipRequest => {
  const p = parseMessage(text.replace(/\r?\n/g, '\r\n'));
  if (!p.ok || p.msg.kind !== 'request') throw new Error('test request did not parse');
  return p.msg;
};

const ISUP = '\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00';
/** A SIP-I body as Huawei/Ribbon interworking sends it: SDP, then the ISUP IAM (binary). */
function sipI(sdp: string, boundary = 'unique-boundary-1'): { contentType: string; body: string } {
  const body = [
    `--${boundary}`,
    'Content-Type: application/sdp',
    '',
    sdp,
    `--${boundary}`,
    'Content-Type: application/ISUP;version=itu-t92+',
    'Content-Disposition: signal;handling=optional',
    '',
    ISUP,
    `--${boundary}--`,
    '',
  ].join('\r\n');
  return { contentType: `multipart/mixed;boundary="${boundary}"`, body };
}

describe('SIP message details (message.ts)', () => {
  it('a user part with parameters (;npdi;rn=) keeps the number', () => {
    const uri = parseUri('sip:+250788123456;npdi;rn=+250788000000@10.0.0.1;user=phone');
    expect(uri).toMatchObject({ user: '+250788123456', host: '10.0.0.1', params: { user: 'phone' } });
    expect(userOf('"Alice" <sip:0788123456;rn=0788000000;npdi@10.0.0.1>;tag=a')).toBe('0788123456');
    expect(parseUri('sip:%2B250788123456@10.0.0.1')?.user).toBe('+250788123456');
  });

  it('a bad %-escape is no URI (400 upstream), never a throw', () => {
    expect(parseUri('sip:%E0%A4%A@10.0.0.1')).toBeUndefined();
    const bad = req(
      request({ localPort: 5060, targetPort: 5060 }).replace('INVITE sip:0700000001@', 'INVITE sip:%ZZ@'),
    );
    expect(validateRequest(bad)).toBe('bad Request-URI');
    const badFrom = req(request({ localPort: 5060, targetPort: 5060 }).replace('<sip:0788123456@', '<sip:%C0@'));
    expect(validateRequest(badFrom)).toBe('bad from header');
  });

  it('multipart/mixed (SIP-I): the SDP part is taken, the ISUP part ignored; no SDP part → refused', () => {
    const sdp = sdpOffer(4000);
    const { contentType, body } = sipI(sdp);
    const r = req(`INVITE sip:a@b SIP/2.0\nContent-Type: ${contentType}\n\n`);
    r.body = body;
    expect(sdpOf(r)).toEqual({ ok: true, sdp });
    r.headers.set('content-type', 'multipart/mixed; boundary=unique-boundary-1');
    expect(sdpOf(r)).toEqual({ ok: true, sdp });
    r.body = body.replace('application/sdp', 'text/plain');
    expect(sdpOf(r)).toMatchObject({ ok: false, reason: 'multipart body without an SDP part' });
    r.headers.set('content-type', 'application/isup');
    expect(sdpOf(r)).toMatchObject({ ok: false, reason: 'unsupported body type application/isup' });
  });

  it('list headers are read over every occurrence and comma list', () => {
    const r = req('OPTIONS sip:a@b SIP/2.0\nRequire: timer\nSupported: replaces, Timer\nrequire: 100rel,  foo\n\n');
    expect(headerTokens(r.headers, 'require')).toEqual(['timer', '100rel', 'foo']);
    expect(headerTokens(r.headers, 'k')).toEqual(['replaces', 'timer']);
  });

  it('every final response carries a To tag; 100 Trying does not', () => {
    const r = req(request({ localPort: 5060, targetPort: 5060 }));
    expect(tagOf(makeResponse(r, 405).headers.get('to'))).toMatch(/^[0-9a-f]{12}$/);
    expect(tagOf(makeResponse(r, 100).headers.get('to'))).toBeUndefined();
    expect(tagOf(makeResponse(r, 486, undefined, 'mine').headers.get('to'))).toBe('mine');
  });
});

describe('SIP message details on the wire (embedded engine, raw UDP peer)', () => {
  it('Via: received and rport are written (RFC 3581) and responses go to the source port', async () => {
    const { engine, peer } = await setup();
    const invite = request({ localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) }).replace(
      `Via: SIP/2.0/UDP 127.0.0.1:${peer.port}`,
      'Via: SIP/2.0/UDP 10.9.9.9:5099',
    );
    peer.send(invite, engine.port);
    const trying = await peer.waitFor((m) => m.kind === 'response' && m.status === 100, 2000, '100 at the rport');
    expect(trying.headers.get('via')).toMatch(
      new RegExp(`^SIP/2\\.0/UDP 10\\.9\\.9\\.9:5099;branch=z9hG4bK\\w+;rport=${peer.port};received=127\\.0\\.0\\.1$`),
    );
  });

  it('without rport the response goes to the Via sent-by port (RFC 3261 §18.2.2)', async () => {
    const { engine, peer } = await setup();
    const other = await newPeer();
    const options = request({ method: 'OPTIONS', localPort: other.port, targetPort: engine.port }).replace(
      ';rport',
      '',
    );
    peer.send(options, engine.port); // sent from `peer`, Via names `other`
    const ok = await other.waitFor((m) => m.kind === 'response' && m.status === 200, 2000, '200 at the Via port');
    expect(ok.headers.get('via')).not.toContain('received='); // sent-by is the source IP
    expect(peer.received).toHaveLength(0);
  });

  it('483 at Max-Forwards 0 (OPTIONS is still answered), with a To tag', async () => {
    const { engine, peer, invites } = await setup();
    const invite = request({ localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) });
    peer.send(invite.replace('Max-Forwards: 70', 'Max-Forwards: 0'), engine.port);
    const res = await peer.waitFor((m) => m.kind === 'response' && m.status === 483, 2000, '483');
    expect(res.kind === 'response' && res.reason).toBe('Too Many Hops');
    expect(tagOf(res.headers.get('to'))).toBeTruthy();
    expect(peer.responses(100)).toHaveLength(0);
    expect(invites).toHaveLength(0);
    const options = request({ method: 'OPTIONS', localPort: peer.port, targetPort: engine.port });
    peer.send(options.replace('Max-Forwards: 70', 'Max-Forwards: 0'), engine.port);
    await peer.waitFor((m) => m.kind === 'response' && m.status === 200, 2000, '200 to OPTIONS');
  });

  it('a merged INVITE (same Call-ID, From tag, CSeq; new branch) gets 482 and no second call', async () => {
    const { engine, peer, invites } = await setup();
    const callId = newId();
    const at = { callId, localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) };
    peer.send(request({ ...at, branch: 'z9hG4bKpath1' }), engine.port);
    await waitFor(() => invites.length === 1, 2000, 'invite');
    peer.send(request({ ...at, branch: 'z9hG4bKpath2' }), engine.port);
    const loop = await peer.waitFor((m) => m.kind === 'response' && m.status === 482, 2000, '482');
    expect(loop.kind === 'response' && loop.reason).toBe('Loop Detected');
    expect(loop.headers.get('via')).toContain('branch=z9hG4bKpath2');
    expect(tagOf(loop.headers.get('to'))).toBeTruthy();
    await sleep(2 * T1);
    expect(invites).toHaveLength(1);
    // A new CSeq (the request re-sent after a 401) is a new request, not a merge.
    invites[0]!.reject(401);
    peer.send(request({ ...at, branch: 'z9hG4bKpath3', cseq: 2 }), engine.port);
    await waitFor(() => invites.length === 2, 2000, 'second invite');
  });

  it('final responses to an out-of-dialog request carry a To tag (415, 420, 405, 501)', async () => {
    const { engine, peer } = await setup();
    const base = { localPort: peer.port, targetPort: engine.port };
    peer.send(request({ ...base, sdp: sdpOffer(4000) }).replace('application/sdp', 'text/plain'), engine.port);
    peer.send(request({ ...base, sdp: sdpOffer(4000), extra: ['Require: x-unknown'] }), engine.port);
    peer.send(request({ ...base, method: 'REGISTER' }), engine.port);
    peer.send(request({ ...base, method: 'FOO' }), engine.port);
    for (const status of [415, 420, 405, 501]) {
      const res = await peer.waitFor((m) => m.kind === 'response' && m.status === status, 2000, String(status));
      expect(tagOf(res.headers.get('to')), String(status)).toMatch(/^[0-9a-f]{12}$/);
    }
  });

  it('Require and Supported are read over every header: a second Require header is checked', async () => {
    const { engine, peer, invites } = await setup();
    const base = { localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) };
    peer.send(request({ ...base, extra: ['Require: timer', 'Require: replaces, x-foo'] }), engine.port);
    const bad = await peer.waitFor((m) => m.kind === 'response' && m.status === 420, 2000, '420');
    expect(bad.headers.get('unsupported')).toBe('x-foo');
    peer.send(request({ ...base, extra: ['Supported: replaces', 'Supported: timer, path'] }), engine.port);
    await waitFor(() => invites.length === 1, 2000, 'invite');
    expect(invites[0]!.header('supported')).toBe('replaces, timer, path');
  });

  it('a SIP-I INVITE (multipart/mixed: SDP + ISUP) is offered to the front with the SDP part', async () => {
    const { engine, peer, invites } = await setup();
    const sdp = sdpOffer(4000);
    const { contentType, body } = sipI(sdp);
    const invite = request({
      localPort: peer.port,
      targetPort: engine.port,
      extra: [`Content-Type: ${contentType}`],
    }).replace(/Content-Length: 0\r\n\r\n$/, `Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\n\r\n${body}`);
    peer.send(invite, engine.port);
    await waitFor(() => invites.length === 1, 2000, 'invite');
    expect(invites[0]!.sdp).toBe(sdp);
    expect(peer.responses(415)).toHaveLength(0);
  });

  it('a bad %-escape in the Request-URI gets 400, and the engine keeps serving', async () => {
    const { engine, peer } = await setup();
    const invite = request({ localPort: peer.port, targetPort: engine.port, sdp: sdpOffer(4000) });
    peer.send(invite.replace('INVITE sip:0700000001@', 'INVITE sip:07%E0%A4%A@'), engine.port);
    const res = await peer.waitFor((m) => m.kind === 'response' && m.status === 400, 2000, '400');
    expect(res.kind === 'response' && res.reason).toBe('Bad Request (bad Request-URI)');
    expect(engine.counters.badRequests).toBe(1);
  });

  async function established(): Promise<{ dialog: SipDialog; peer: RawSipPeer; callId: string; toTag: string }> {
    const { peer } = await setup();
    return { ...(await rig!.established(peer)), peer };
  }

  it('an UPDATE without SDP is answered without SDP (RFC 3311); with SDP, with our answer', async () => {
    const { dialog, peer, callId, toTag } = await established();
    dialog.on('modify', (m) => m.respond({ sdp: sdpOffer(5000) }));
    const at = { callId, toTag, method: 'UPDATE', localPort: peer.port, targetPort: engine!.port };
    peer.send(request({ ...at, cseq: 2, extra: ['Session-Expires: 90;refresher=uac'] }), engine!.port);
    const bare = await peer.waitFor((m) => m.kind === 'response' && m.headers.get('cseq') === '2 UPDATE');
    expect(bare.kind === 'response' && bare.status).toBe(200);
    expect(bare.body).toBe('');
    expect(bare.headers.get('content-type')).toBeUndefined();
    peer.send(request({ ...at, cseq: 3, sdp: sdpOffer(4002) }), engine!.port);
    const full = await peer.waitFor((m) => m.kind === 'response' && m.headers.get('cseq') === '3 UPDATE');
    expect(full.headers.get('content-type')).toBe('application/sdp');
    expect(full.body).toContain('m=audio 5000 ');
  });
});
