import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { testLogger } from '../../src/core/logger.js';
import type { DialogHost } from '../../src/sip/drachtio/dialog.js';
import type { DialogLike, SrfLike, SrfRequestLike, SrfResponseLike } from '../../src/sip/drachtio/srf-types.js';
import { DrachtioInvite } from '../../src/sip/drachtio/uas.js';

/**
 * RFC 3262 on the drachtio engine, the paths a real caller (sipp-100rel.test.ts covers the PRACK
 * that comes) does not take on demand: no PRACK ever, CANCEL while the 200 waits for it.
 */
class Req extends EventEmitter implements SrfRequestLike {
  method = 'INVITE';
  uri = 'sip:0700000001@127.0.0.1';
  body = 'v=0\r\n';
  source_address = '127.0.0.1';
  source_port = 5060;
  protocol = 'udp';
  constructor(private readonly hdrs: Record<string, string>) {
    super();
  }
  get(name: string) {
    return Object.entries(this.hdrs).find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
  }
  has(name: string) {
    return this.get(name) !== undefined;
  }
}

/** Records what the engine sent; `prack()` plays the caller's PRACK of the reliable 18x. */
class Res implements SrfResponseLike {
  sent: { status: number; reason?: string; headers?: Record<string, string> }[] = [];
  private onPrack: (() => void) | undefined;
  /** drachtio-srf's shapes: (status, reason?, opts?) and (status, opts, callback, onPrack). */
  send(status: number, reasonOrOpts?: string | object, ...rest: unknown[]) {
    const named = typeof reasonOrOpts === 'string';
    const o = (named ? rest[0] : reasonOrOpts) as { headers?: Record<string, string> } | undefined;
    this.sent.push({ status, reason: named ? reasonOrOpts : undefined, headers: o?.headers });
    const onPrack = named ? undefined : rest[1];
    if (typeof onPrack === 'function') this.onPrack = () => (onPrack as (r: unknown) => void)({});
  }
  prack() {
    this.onPrack?.();
  }
}

function invite(hdrs: Record<string, string>, prackWaitMs = 60_000) {
  const oks: string[] = [];
  const dialog = Object.assign(new EventEmitter(), {
    id: 'd1',
    sip: { callId: 'c1' },
    destroy: () => Promise.resolve(),
    request: () => Promise.resolve({ status: 200 }),
  }) as unknown as DialogLike;
  const srf = {
    createUAS: (_q: unknown, _s: unknown, opts: { localSdp: string }) => {
      oks.push(opts.localSdp);
      setImmediate(() => (dialog as unknown as EventEmitter).emit('ack'));
      return Promise.resolve(dialog);
    },
  } as unknown as SrfLike;
  const host: DialogHost = { srf, linkUp: () => true, track() {}, untrack() {}, byeWhenBack() {} };
  const req = new Req({ 'Call-ID': 'c1', From: '<sip:a@b>;tag=1', To: '<sip:c@d>', ...hdrs });
  const res = new Res();
  const inv = new DrachtioInvite(host, req, res, testLogger(), 20_000, prackWaitMs);
  return { inv, req, res, oks };
}

describe('drachtio engine: reliable provisionals (RFC 3262)', () => {
  it('no 100rel offered: a plain 180, and the 200 goes at once', async () => {
    const { inv, res, oks } = invite({ Supported: 'timer' });
    inv.progress(180);
    expect(res.sent).toEqual([{ status: 180, reason: undefined, headers: undefined }]);
    await inv.answer('v=0 ours');
    expect(oks).toEqual(['v=0 ours']);
  });

  it('the 200 waits for the PRACK of the reliable 180; a second 18x meanwhile is not sent', async () => {
    const { inv, res, oks } = invite({ Supported: 'timer, 100rel' });
    inv.progress(180);
    inv.progress(183);
    expect(res.sent).toEqual([{ status: 180, reason: undefined, headers: { Require: '100rel' } }]);
    const answered = inv.answer('v=0 ours');
    await new Promise((r) => setImmediate(r));
    expect(oks).toEqual([]);
    res.prack();
    await answered;
    expect(oks).toEqual(['v=0 ours']);
  });

  it('hostile: the caller never PRACKs → 500 "no PRACK", failed, the 200 never goes', async () => {
    const { inv, res, oks } = invite({ Require: '100rel' }, 50);
    const failed = new Promise<string>((r) => inv.once('failed', r));
    inv.progress(180);
    const answered = inv.answer('v=0 ours');
    expect(await failed).toMatch(/no PRACK .* within 50 ms/);
    await expect(answered).rejects.toMatchObject({ code: 'leg_closed' });
    expect(res.sent.map((s) => [s.status, s.reason])).toEqual([
      [180, undefined],
      [500, 'Server Internal Error (no PRACK)'],
    ]);
    res.prack(); // a PRACK after the 500 changes nothing
    await new Promise((r) => setImmediate(r));
    expect(oks).toEqual([]);
  });

  it('CANCEL while the 200 waits for the PRACK: answer rejects, no 200', async () => {
    const { inv, req, oks } = invite({ Require: '100rel' });
    inv.progress(180);
    const answered = inv.answer('v=0 ours');
    req.emit('cancel');
    await expect(answered).rejects.toMatchObject({ code: 'leg_closed' });
    expect(inv.cancelled).toBe(true);
    expect(oks).toEqual([]);
  });
});
