import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { Call } from '../../src/core/call.js';
import { testLogger } from '../../src/core/logger.js';
import { Gateway } from '../../src/gateway.js';
import {
  DrachtioEngine,
  type DialogLike,
  type SrfLike,
  type SrfRequestLike,
  type SrfResponseLike,
} from '../../src/sip/drachtio/engine.js';
import { SipFront } from '../../src/sip/front.js';
import { sdpOffer } from '../peers/sip/udp-peer.js';
import { waitFor } from '../support/gateway.js';

/** drachtio-srf's request as our engine sees it (headers, source address, cancel event). */
class FakeReq extends EventEmitter implements SrfRequestLike {
  method = 'INVITE';
  protocol = 'udp';
  constructor(
    public uri: string,
    public body: string,
    private readonly hdrs: Record<string, string>,
    public source_address = '127.0.0.1',
    public source_port: string | number = '5060',
  ) {
    super();
  }
  get(name: string) {
    return Object.entries(this.hdrs).find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
  }
  has(name: string) {
    return this.get(name) !== undefined;
  }
}

class FakeRes implements SrfResponseLike {
  sent: { status: number; reason?: string; opts?: unknown }[] = [];
  send(status: number, reasonOrOpts?: string | object, opts?: object) {
    this.sent.push(
      typeof reasonOrOpts === 'string' ? { status, reason: reasonOrOpts, opts } : { status, opts: reasonOrOpts },
    );
  }
}

class FakeDialog extends EventEmitter implements DialogLike {
  sip = { callId: 'dlg-1' };
  destroyed: unknown[] = [];
  requests: { method: string; headers?: Record<string, string> }[] = [];
  referStatus = 202;
  destroy(opts?: { headers: Record<string, string> }) {
    this.destroyed.push(opts);
    return Promise.resolve();
  }
  request(opts: { method: string; headers?: Record<string, string> }) {
    this.requests.push(opts);
    return Promise.resolve({ status: this.referStatus, reason: 'x' });
  }
}

/** The slice of drachtio-srf the engine drives: handlers registered, connect, createUAS. */
class FakeSrf extends EventEmitter implements SrfLike {
  inviteHandler: ((req: SrfRequestLike, res: SrfResponseLike) => void) | undefined;
  optionsHandler: ((req: SrfRequestLike, res: SrfResponseLike) => void) | undefined;
  connectedWith: unknown;
  uas: { sdp: string; headers?: Record<string, string>; dialog: FakeDialog }[] = [];
  connect(opts: unknown) {
    this.connectedWith = opts;
    setImmediate(() => this.emit('connect', null, '127.0.0.1:5060'));
  }
  disconnect() {}
  invite(fn: (req: SrfRequestLike, res: SrfResponseLike) => void) {
    this.inviteHandler = fn;
  }
  options(fn: (req: SrfRequestLike, res: SrfResponseLike) => void) {
    this.optionsHandler = fn;
  }
  createUAS(_req: SrfRequestLike, _res: SrfResponseLike, opts: { localSdp: string; headers?: Record<string, string> }) {
    const dialog = new FakeDialog();
    this.uas.push({ sdp: opts.localSdp, headers: opts.headers, dialog });
    return Promise.resolve(dialog);
  }
}

let gw: Gateway | undefined;
afterEach(async () => {
  await gw?.stop('test_done', 0);
  gw = undefined;
});

async function start(srf: FakeSrf): Promise<SipFront> {
  const rtpMin = 26000 + Math.floor(Math.random() * 50) * 20;
  const config = parseConfig(
    {
      http: { host: '127.0.0.1', port: 0 },
      records: { path: ':memory:' },
      shutdown: { drainSec: 0 },
      sip: {
        enabled: true,
        engine: 'drachtio',
        host: '127.0.0.1',
        publicAddress: '127.0.0.1',
        rtpPortMin: rtpMin,
        rtpPortMax: rtpMin + 19,
        drachtio: { host: '10.0.0.5', port: 9022, secret: 'cymru' },
      },
      trunks: [{ name: 'mtn', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', auth: undefined }],
      routes: { local: { kind: 'local', greeting: '' } },
    },
    {},
  );
  gw = new Gateway(config, testLogger());
  const engine = new DrachtioEngine({ ...config.sip.drachtio!, log: testLogger(), srf });
  const front = new SipFront(gw.ctx, { engine });
  gw.addFront(front);
  await gw.start();
  return front;
}

const invite = (src = '127.0.0.1', extra: Record<string, string> = {}) =>
  new FakeReq(
    'sip:0700000001@gw',
    sdpOffer(4100),
    {
      'Call-ID': 'abc@carrier',
      From: '<sip:0788123456@carrier>;tag=1',
      To: '<sip:0700000001@gw>',
      ...extra,
    },
    src,
  );

describe('drachtio engine: drachtio-srf requests and dialogs mapped onto gateway calls (fake srf)', () => {
  it('connects with the configured server and answers OPTIONS', async () => {
    const srf = new FakeSrf();
    const front = await start(srf);
    expect(srf.connectedWith).toEqual({ host: '10.0.0.5', port: 9022, secret: 'cymru' });
    await waitFor(() => front.ready(), 1000, 'connected');
    expect(front.describe()).toMatchObject({ engine: 'drachtio', connected: true });
    const res = new FakeRes();
    srf.optionsHandler!(invite(), res);
    expect(res.sent[0]?.status).toBe(200);
  });

  it('INVITE → 180, createUAS with our SDP answer; BYE (destroy) ends the call; re-INVITE hold answered recvonly', async () => {
    const srf = new FakeSrf();
    await start(srf);
    const created = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
    const res = new FakeRes();
    srf.inviteHandler!(invite('127.0.0.1', { 'Session-Expires': '600', Supported: 'timer' }), res);
    const call = await created;
    expect(call.info).toMatchObject({
      front: 'sip',
      from: '+250788123456',
      to: '+250700000001',
      trunk: 'mtn',
      externalId: 'abc@carrier',
    });
    await waitFor(() => srf.uas.length === 1, 3000, 'createUAS');
    expect(res.sent.map((s) => s.status)).toEqual([180]);
    const { sdp, headers, dialog } = srf.uas[0]!;
    expect(sdp).toMatch(/m=audio \d+ RTP\/AVP 8 101/);
    expect(headers).toMatchObject({ 'session-expires': '600;refresher=uac', require: 'timer' });
    await waitFor(() => call.state === 'bridged' && !!call.transfer, 2000, 'bridged');

    const reRes = new FakeRes();
    dialog.emit('modify', new FakeReq('sip:gw', sdpOffer(4100, 'sendonly'), {}), reRes);
    expect(reRes.sent[0]?.status).toBe(200);
    expect((reRes.sent[0]?.opts as { body: string }).body).toContain('a=recvonly');

    await call.transfer!('+250788000111');
    expect(dialog.requests[0]).toEqual({ method: 'REFER', headers: { 'Refer-To': '<sip:+250788000111@127.0.0.1>' } });
    dialog.referStatus = 480;
    await expect(call.transfer!('+250788000111')).rejects.toThrow(/480/);

    dialog.emit('destroy');
    await waitFor(() => call.ended, 2000, 'ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    expect(dialog.destroyed).toHaveLength(0); // the far end hung up: we send no BYE of our own
  });

  it('gateway-side hangup destroys the dialog (BYE); CANCEL maps to a cancelled call; unknown source → 403', async () => {
    const srf = new FakeSrf();
    await start(srf);
    const created = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
    srf.inviteHandler!(invite(), new FakeRes());
    const call = await created;
    await waitFor(() => srf.uas.length === 1 && !!call.transfer, 3000, 'answered');
    await call.end({ by: 'ai', cause: 'goodbye' });
    expect(srf.uas[0]!.dialog.destroyed[0]).toMatchObject({
      headers: { Reason: expect.stringContaining('goodbye') as string },
    });

    const res403 = new FakeRes();
    srf.inviteHandler!(invite('192.0.2.9'), res403);
    await waitFor(() => res403.sent.length > 0, 1000, '403');
    expect(res403.sent[0]).toMatchObject({ status: 403, reason: 'Forbidden (unknown source address)' });

    // CANCEL arriving while the front is still setting up: the call ends as cancelled, no createUAS.
    const req = invite();
    const c2p = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
    srf.inviteHandler!(req, new FakeRes());
    const c2 = await c2p;
    req.emit('cancel');
    await waitFor(() => c2.ended, 2000, 'cancelled');
    expect(c2.endReason).toMatchObject({ by: 'remote', cause: 'cancel' });
    await new Promise((r) => setTimeout(r, 300));
    expect(srf.uas).toHaveLength(1);
    expect(gw!.ctx.registry.size).toBe(0);
  });

  it('cannot refresh sessions, so never promises refresher=uas: hands the job to a timer-capable trunk, declines otherwise', async () => {
    const srf = new FakeSrf();
    await start(srf);
    const created = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
    srf.inviteHandler!(
      invite('127.0.0.1', { 'Session-Expires': '600;refresher=uas', Supported: 'timer' }),
      new FakeRes(),
    );
    const c1 = await created;
    await waitFor(() => srf.uas.length === 1, 3000, 'createUAS');
    expect(srf.uas[0]!.headers).toMatchObject({ 'session-expires': '600;refresher=uac', require: 'timer' });
    await c1.end({ by: 'gateway', cause: 'test' });
    // A trunk without timer support would need us to refresh (RFC 4028 §9): no session timer at all.
    const c2p = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
    srf.inviteHandler!(invite('127.0.0.1', { 'Session-Expires': '600' }), new FakeRes());
    await c2p;
    await waitFor(() => srf.uas.length === 2, 3000, 'createUAS 2');
    expect(srf.uas[1]!.headers?.['session-expires']).toBeUndefined();
  });
});
