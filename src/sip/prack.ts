import { randomInt } from 'node:crypto';
import { hasOptionTag } from './session-timer.js';
import { splitNameAddrs } from './dialog.js';
import { parseCSeq, serialize, SipHeaders, type SipRequest, type SipResponse } from './message.js';
import { Retransmitter } from './transactions.js';

/**
 * RFC 3262 reliable provisional responses: the UAS side (an 18x with RSeq, retransmitted with T1
 * doubling until its PRACK, abandoned after 64·T1) and the UAC side (the PRACK we owe a reliable
 * 18x). Hand-written for the same reason as the rest of the embedded engine (see message.ts).
 */

/** Whether the UAC allows (Supported) or demands (Require) reliable provisional responses. */
export function wants100rel(h: SipHeaders): boolean {
  return hasOptionTag([...h.getAll('require'), ...h.getAll('supported'), ...h.getAll('k')], '100rel');
}

/** RAck value `rseq cseq method`, or undefined when garbled. */
export function parseRAck(v: string | undefined): { rseq: number; cseq: number; method: string } | undefined {
  const m = /^\s*(\d{1,10})\s+(\d{1,10})\s+([A-Za-z]+)\s*$/.exec(v ?? '');
  return m ? { rseq: Number(m[1]), cseq: Number(m[2]), method: m[3]!.toUpperCase() } : undefined;
}

/** One INVITE's reliable 18x (UAS): at most one outstanding at a time (RFC 3262 §3). */
export class ReliableProvisionals {
  /** RFC 3262 §3: the first RSeq is random in 1..2^31-1 (kept small enough to never overflow). */
  private rseq = randomInt(1, 2 ** 30);
  private outstanding: { rseq: number; rt: Retransmitter; acked: () => void } | undefined;
  private waiting: Promise<void> = Promise.resolve();

  constructor(
    private readonly t1: number,
    private readonly send: (buf: Buffer) => void,
    /** No PRACK within 64·T1: the INVITE must be rejected with a 5xx (RFC 3262 §3). */
    private readonly onTimeout: () => void,
  ) {}

  /** Whether a reliable 18x awaits its PRACK (another one must wait; the 2xx waits for it). */
  get pending(): boolean {
    return !!this.outstanding;
  }

  /** Resolves once no reliable 18x is outstanding (the 2xx goes out after the PRACK). */
  settled(): Promise<void> {
    return this.waiting;
  }

  /** Send `res` reliably: adds RSeq and Require: 100rel, retransmits until PRACK or 64·T1. */
  send18x(res: SipResponse): void {
    if (this.outstanding) return; // RFC 3262 §3: not before the previous one is PRACKed
    const rseq = ++this.rseq;
    res.headers.set('require', '100rel');
    res.headers.set('rseq', String(rseq));
    const buf = serialize(res);
    this.send(buf);
    let acked!: () => void;
    this.waiting = new Promise<void>((r) => (acked = r));
    const rt = new Retransmitter(
      () => this.send(buf),
      this.t1,
      Number.MAX_SAFE_INTEGER, // T1 doubling without the T2 cap (RFC 3262 §3)
      () => {
        this.outstanding = undefined;
        this.onTimeout();
      },
    );
    this.outstanding = { rseq, rt, acked };
  }

  /** A PRACK: true when its RAck matches the outstanding 18x (then answered 200 by the caller). */
  onPrack(req: SipRequest, inviteCseq: number): boolean {
    const rack = parseRAck(req.headers.get('rack'));
    const o = this.outstanding;
    if (!rack || rack.method !== 'INVITE' || rack.cseq !== inviteCseq) return false;
    if (!o) return rack.rseq <= this.rseq; // a retransmitted PRACK of one already acknowledged
    if (rack.rseq !== o.rseq) return false;
    o.rt.stop();
    this.outstanding = undefined;
    o.acked();
    return true;
  }

  dispose(): void {
    this.outstanding?.rt.stop();
    this.outstanding = undefined;
  }
}

/**
 * The PRACK a UAC owes a reliable 18x (RFC 3262 §4): in the early dialog the 18x set up (its To
 * tag, Contact as target, Record-Route reversed as route set), with RAck naming the 18x.
 * Undefined when the 18x is not reliable or lacks what a PRACK needs.
 */
export function buildPrack(
  invite: SipRequest,
  res: SipResponse,
  cseq: number,
): { req: SipRequest; rseq: number; target: string } | undefined {
  if (!hasOptionTag(res.headers.getAll('require'), '100rel')) return undefined;
  const rseq = Number(res.headers.get('rseq'));
  const inviteCseq = parseCSeq(invite.headers.get('cseq'))?.seq;
  const contact = /<([^>]+)>|^\s*([^;,\s]+)/.exec(res.headers.get('contact') ?? '');
  if (!Number.isInteger(rseq) || rseq <= 0 || inviteCseq === undefined) return undefined;
  const target = contact?.[1] ?? contact?.[2] ?? invite.uri;
  const h = new SipHeaders();
  for (const r of splitNameAddrs(res.headers.getAll('record-route')).reverse()) h.add('route', r);
  h.add('from', invite.headers.get('from')!);
  h.add('to', res.headers.get('to')!);
  h.add('call-id', invite.headers.get('call-id')!);
  h.add('cseq', `${cseq} PRACK`);
  h.add('rack', `${rseq} ${inviteCseq} INVITE`);
  return { req: { kind: 'request', method: 'PRACK', uri: target, headers: h, body: '' }, rseq, target };
}
