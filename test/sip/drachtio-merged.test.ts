import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { MergedInviteGuard } from '../../src/sip/drachtio/merged.js';
import type { SrfRequestLike, SrfResponseLike } from '../../src/sip/drachtio/srf-types.js';

/** RFC 3261 §8.2.2.2 on the drachtio engine (sipp-message-details.test.ts runs it through drachtio-server). */
function invite(callId: string, fromTag: string, cseq = '1 INVITE') {
  const h: Record<string, string> = { 'call-id': callId, from: `<sip:a@b>;tag=${fromTag}`, cseq };
  const req = Object.assign(new EventEmitter(), {
    get: (n: string) => h[n.toLowerCase()],
    has: (n: string) => n.toLowerCase() in h,
  }) as unknown as SrfRequestLike & EventEmitter;
  const res = Object.assign(new EventEmitter(), { send() {} }) as unknown as SrfResponseLike & EventEmitter;
  return { req, res };
}

describe('drachtio engine: merged INVITEs', () => {
  it('the same Call-ID, From tag and CSeq while the first is open is merged; other tags or CSeqs are not', () => {
    const g = new MergedInviteGuard();
    const first = invite('c1', 't1');
    expect(g.isMerged(first.req, first.res)).toBe(false);
    expect(g.isMerged(invite('c1', 't1').req, invite('c1', 't1').res)).toBe(true);
    expect(g.isMerged(invite('c1', 't2').req, invite('c1', 't2').res)).toBe(false);
    expect(g.isMerged(invite('c1', 't1', '2 INVITE').req, invite('c1', 't1').res)).toBe(false);
    g.clear();
  });

  it('after the final response or a CANCEL the same request is a new one again', () => {
    const g = new MergedInviteGuard();
    const a = invite('c1', 't1');
    g.isMerged(a.req, a.res);
    a.res.emit('end');
    const b = invite('c1', 't1');
    expect(g.isMerged(b.req, b.res)).toBe(false);
    b.req.emit('cancel');
    expect(g.size).toBe(0);
  });

  it('hostile: a flood of unanswered INVITEs is held only as entries that stop() drops (each also expires after 64·T1)', () => {
    const g = new MergedInviteGuard();
    for (let i = 0; i < 5000; i++) {
      const x = invite(`c${i}`, 't');
      g.isMerged(x.req, x.res);
    }
    expect(g.size).toBe(5000);
    g.clear();
    expect(g.size).toBe(0);
  });
});
