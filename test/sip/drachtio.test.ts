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
import { createEngine, SipFront } from '../../src/sip/front.js';
import { sdpOffer } from '../peers/sip/udp-peer.js';
import { loopbackSipConfig, waitFor } from '../support/gateway.js';
import { leasePortRange } from '../support/ports.js';

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
  id = 'stack-dlg-1';
  sip = { callId: 'dlg-1' };
  remote = { sdp: '' };
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
  inDialog: { id: string; method: string; headers: Record<string, string> }[] = [];
  knownDialogs = new Set<string>();
  requestInDialog(id: string, method: string, headers: Record<string, string>) {
    this.inDialog.push({ id, method, headers });
    if (!this.knownDialogs.has(id)) {
      const err = Object.assign(new Error('unable to find dialog'), { code: 'ENODIALOG' });
      return Promise.reject(err);
    }
    return Promise.resolve(200);
  }
  invite(fn: (req: SrfRequestLike, res: SrfResponseLike) => void) {
    this.inviteHandler = fn;
  }
  options(fn: (req: SrfRequestLike, res: SrfResponseLike) => void) {
    this.optionsHandler = fn;
  }
  createUAS(_req: SrfRequestLike, _res: SrfResponseLike, opts: { localSdp: string; headers?: Record<string, string> }) {
    const dialog = new FakeDialog();
    this.uas.push({ sdp: opts.localSdp, headers: opts.headers, dialog });
    setImmediate(() => dialog.emit('ack'));
    return Promise.resolve(dialog);
  }
  createUAC(): Promise<DialogLike> {
    return Promise.reject(new Error('not used'));
  }
}

let gw: Gateway | undefined;
afterEach(async () => {
  await gw?.stop('test_done', 0);
  gw = undefined;
});

async function start(srf: FakeSrf, linkGraceSec = 30): Promise<SipFront> {
  const [rtpMin] = leasePortRange(100);
  const config = parseConfig(
    {
      // sip.port is the embedded engine's; this front gets its drachtio engine below.
      ...loopbackSipConfig(rtpMin, rtpMin + 19, {
        engine: 'drachtio',
        drachtio: { host: '10.0.0.5', port: 9022, secret: 'cymru', linkGraceSec },
      }),
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
  // A real drachtio-server delivers INVITEs only over a live control link.
  await waitFor(() => front.ready(), 1000, 'connected');
  return front;
}

let calls = 0;
/** A new INVITE each time (its own Call-ID: the engine answers a repeated one as merged, 482). */
const invite = (src = '127.0.0.1', extra: Record<string, string> = {}) =>
  new FakeReq(
    'sip:0700000001@gw',
    sdpOffer(4100),
    {
      'Call-ID': `abc${++calls}@carrier`,
      CSeq: '1 INVITE',
      From: '<sip:0788123456@carrier>;tag=1',
      To: '<sip:0700000001@gw>',
      ...extra,
    },
    src,
  );

/** An answered call on the fake: resolves with the gateway call and the srf dialog behind it. */
async function answeredCall(srf: FakeSrf): Promise<{ call: Call; dialog: FakeDialog }> {
  const created = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
  srf.inviteHandler!(invite(), new FakeRes());
  const call = await created;
  await waitFor(() => srf.uas.length > 0 && !!call.transfer, 3000, 'answered');
  return { call, dialog: srf.uas.at(-1)!.dialog };
}

// What the real drachtio-server cannot be made to do on demand in a test; everything else is in
// test/sip/drachtio-*.test.ts against the real server.
describe('drachtio engine: cases a real drachtio-server cannot provoke on demand (fake srf)', () => {
  it('start-up: sip.tls with the drachtio engine is refused with where TLS belongs instead', () => {
    const config = parseConfig(
      {
        records: { path: ':memory:' },
        sip: {
          engine: 'drachtio',
          drachtio: { host: '127.0.0.1', port: 9022, secret: 'cymru' },
          tls: { cert: '/x.pem', key: '/x.key' },
        },
      },
      {},
    );
    gw = new Gateway(config, testLogger());
    expect(() => createEngine(gw!.ctx)).toThrow(/TLS contact and certificate in drachtio-server's config/);
  });

  it('REFER: 202 resolves the transfer, 480 rejects it with the status', async () => {
    const srf = new FakeSrf();
    await start(srf);
    const { call, dialog } = await answeredCall(srf);
    await call.transfer!('+250788000111');
    expect(dialog.requests[0]).toEqual({ method: 'REFER', headers: { 'Refer-To': '<sip:+250788000111@127.0.0.1>' } });
    dialog.referStatus = 480;
    await expect(call.transfer!('+250788000111')).rejects.toThrow(/480/);
  });

  it('INVITEs are reported with their real transport (tls, wss → tls; tcp, ws → tcp)', async () => {
    const srf = new FakeSrf();
    const front = await start(srf);
    const seen: string[] = [];
    front.engine.on('invite', (inv) => seen.push(inv.source.transport));
    for (const protocol of ['tls', 'wss', 'tcp', 'ws', 'udp']) {
      const req = invite('192.0.2.9'); // unknown source: 403 right away, nothing else happens
      req.protocol = protocol;
      srf.inviteHandler!(req, new FakeRes());
    }
    expect(seen).toEqual(['tls', 'tls', 'tcp', 'tcp', 'udp']);
  });

  it('its own BYE for an expired session (Reason "Session timer expired") ends the call session_expired', async () => {
    const srf = new FakeSrf();
    const front = await start(srf);
    const { call, dialog } = await answeredCall(srf);
    dialog.emit('destroy', {}, 'Session timer expired');
    await waitFor(() => call.ended, 2000, 'ended');
    expect(call.endReason).toMatchObject({ by: 'timeout', cause: 'session_expired' });
    expect(dialog.destroyed).toHaveLength(0); // drachtio-server already sent the BYE
    expect(front.ready()).toBe(true);
  });

  it('link down past the grace period: the call ends sip_link_lost; its BYE goes out once the link is back', async () => {
    const srf = new FakeSrf();
    const front = await start(srf, 0.3);
    await waitFor(() => front.ready(), 1000, 'connected');
    const { call, dialog } = await answeredCall(srf);
    srf.knownDialogs.add(dialog.id);
    srf.emit('close');
    expect(front.ready()).toBe(false);
    await waitFor(() => call.ended, 2000, 'ended after the grace');
    expect(call.endReason).toMatchObject({ by: 'error', cause: 'sip_link_lost' });
    expect(srf.inDialog).toHaveLength(0); // nothing can go out while the link is down
    srf.emit('connect', null, '127.0.0.1:5060');
    await waitFor(() => srf.inDialog.length === 1, 1000, 'late BYE');
    expect(srf.inDialog[0]).toMatchObject({ id: dialog.id, method: 'BYE' });
    expect(srf.inDialog[0]!.headers.Reason).toMatch(/sip_link_lost/);
    expect(dialog.destroyed).toHaveLength(0);
  });

  it('link back within the grace: a call whose dialog the server still knows lives on', async () => {
    const srf = new FakeSrf();
    const front = await start(srf, 5);
    await waitFor(() => front.ready(), 1000, 'connected');
    const { call, dialog } = await answeredCall(srf);
    srf.knownDialogs.add(dialog.id);
    srf.emit('close');
    srf.emit('connect', null, '127.0.0.1:5060');
    await waitFor(() => srf.inDialog.length === 1, 1000, 'dialog probe');
    expect(srf.inDialog[0]).toMatchObject({ id: dialog.id, method: 'OPTIONS' });
    await new Promise((r) => setTimeout(r, 200));
    expect(call.ended).toBe(false);
    expect(front.ready()).toBe(true);
  });

  it('session timers: the 2xx negotiates them (drachtio-server runs them), refresher=uas included', async () => {
    const srf = new FakeSrf();
    await start(srf);
    const created = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
    srf.inviteHandler!(
      invite('127.0.0.1', { 'Session-Expires': '600;refresher=uas', Supported: 'timer' }),
      new FakeRes(),
    );
    const c1 = await created;
    await waitFor(() => srf.uas.length === 1, 3000, 'createUAS');
    expect(srf.uas[0]!.headers).toMatchObject({ 'session-expires': '600;refresher=uas', require: 'timer' });
    await c1.end({ by: 'gateway', cause: 'test' });
    // A trunk without timer support: RFC 4028 §9 makes us (drachtio-server) the refresher.
    const c2p = new Promise<Call>((r) => gw!.ctx.registry.once('created', r));
    srf.inviteHandler!(invite('127.0.0.1', { 'Session-Expires': '600' }), new FakeRes());
    await c2p;
    await waitFor(() => srf.uas.length === 2, 3000, 'createUAS 2');
    expect(srf.uas[1]!.headers?.['session-expires']).toBe('600;refresher=uas');
  });
});
