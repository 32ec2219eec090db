import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { splitNameAddrs } from './dialog.js';
import { type Dest, EmbeddedDialog, type EmbeddedSipEngine } from './embedded.js';
import { parseNameAddr, parseUri, serialize, SipHeaders, tagOf, type SipRequest, type SipResponse } from './message.js';
import { buildPrack } from './prack.js';
import type { InviteOptions, InviteResult, UacTx } from './uac.js';

/**
 * The RFC 3261 §17.1.1 INVITE client transaction behind SipUac (uac.ts): timer A retransmission over
 * UDP and timer B, ACK for a non-2xx within the transaction and for each 2xx from the dialog
 * (§13.2.2.4, re-sent for every retransmitted 2xx, RFC 6026), PRACK for reliable provisionals
 * (RFC 3262), and CANCEL (§9.1) when the caller gives up.
 */

type TxState = 'calling' | 'proceeding' | 'accepted' | 'completed' | 'terminated';

/** One INVITE client transaction plus the UAC core around it (ACK, CANCEL, dialog creation). */
export class InviteClientTx implements UacTx {
  private state: TxState = 'calling';
  private readonly buf: Buffer;
  private readonly key: string;
  private readonly timers = new Set<NodeJS.Timeout>();
  private timerA: NodeJS.Timeout | undefined;
  private interval: number;
  /** Set once the caller has its answer (resolved or rejected); later events only clean up. */
  private settled = false;
  private cancelWanted = false;
  private cancelSent = false;
  private nonAck: Buffer | undefined;
  /** Dialogs by remote tag (more than one only when a forking proxy answers twice). */
  private readonly acks = new Map<string, { buf: Buffer; dest: Dest }>();
  private readonly log: Logger;
  /** How many times the INVITE went out (tests check timer A). */
  sends = 1;
  /** RFC 3262: the highest RSeq we PRACKed, and the CSeq of our last request (INVITE or PRACK). */
  private lastRseq = 0;
  private lastCseq: number;
  private readonly disposers: (() => void)[] = [];

  constructor(
    private readonly engine: EmbeddedSipEngine,
    private readonly req: SipRequest,
    private readonly branch: string,
    private readonly cseq: number,
    readonly dest: Dest,
    private readonly opts: InviteOptions,
    private readonly resolve: (r: InviteResult) => void,
    private readonly reject: (e: Error) => void,
  ) {
    this.log = engine.log.child({ sipCallId: req.headers.get('call-id'), callId: opts.callId });
    this.lastCseq = cseq;
    this.buf = serialize(req);
    this.key = `${branch}|INVITE`;
    engine.addUacTx(this.key, this);
    this.interval = engine.t1;
    engine.sendRaw(this.buf, dest);
    if (dest.transport === 'udp') this.scheduleA(); // timer A is for unreliable transports only
    // Timer B: no response at all within 64·T1 ends the transaction.
    this.after(64 * engine.t1, () => {
      if (this.state !== 'calling') return;
      this.log.warn({ sends: this.sends }, 'no response to INVITE (timer B)');
      this.giveUp(
        new GatewayError('timeout', `no response to INVITE within ${64 * engine.t1} ms`, opts.callId, {
          details: { failover: true },
        }),
      );
      this.terminate();
    });
    this.after(opts.timeoutMs, () => {
      if (this.settled) return;
      this.log.info({ timeoutMs: opts.timeoutMs, state: this.state }, 'INVITE not answered in time: cancelling');
      this.giveUp(new GatewayError('timeout', `not answered within ${opts.timeoutMs} ms (CANCEL sent)`, opts.callId));
      this.cancel();
    });
    const signal = opts.signal;
    if (signal) {
      const onAbort = () => {
        if (this.settled) return;
        this.log.info('dial aborted: cancelling the INVITE');
        this.giveUp(new GatewayError('leg_closed', 'dial aborted (CANCEL sent)', opts.callId));
        this.cancel();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.disposers.push(() => signal.removeEventListener('abort', onAbort));
    }
  }

  private after(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  private scheduleA(): void {
    this.timerA = this.after(this.interval, () => {
      if (this.state !== 'calling') return;
      this.sends++;
      this.engine.sendRaw(this.buf, this.dest);
      this.interval *= 2; // timer A doubles without the T2 cap (RFC 3261 §17.1.1.2)
      this.scheduleA();
    });
  }

  private stopA(): void {
    if (this.timerA) {
      clearTimeout(this.timerA);
      this.timers.delete(this.timerA);
      this.timerA = undefined;
    }
  }

  onResponse(res: SipResponse): void {
    if (this.state === 'terminated') return;
    if (res.status < 200) return this.onProvisional(res);
    if (res.status < 300) return this.onSuccess(res);
    this.onFailure(res);
  }

  private onProvisional(res: SipResponse): void {
    if (this.state !== 'calling' && this.state !== 'proceeding') return;
    this.stopA();
    this.state = 'proceeding';
    this.prackIfReliable(res);
    if (res.status > 100) {
      this.log.info({ status: res.status, reason: res.reason }, 'INVITE provisional response');
      if (!this.settled) this.opts.onProvisional?.(res.status, res.reason);
    }
    if (this.cancelWanted) this.sendCancel(); // deferred until now (RFC 3261 §9.1)
  }

  private onSuccess(res: SipResponse): void {
    const toTag = tagOf(res.headers.get('to')) ?? '';
    const known = this.acks.get(toTag);
    if (known) return void this.engine.sendRaw(known.buf, known.dest); // retransmitted 2xx: ACK again
    if (this.state === 'completed') return; // 2xx after a non-2xx final: not ours to confirm
    const first = this.state === 'calling' || this.state === 'proceeding';
    this.stopA();
    this.state = 'accepted';
    const dialog = this.makeDialog(res);
    const ack = dialog.buildAck(this.cseq);
    this.acks.set(toTag, ack);
    this.engine.sendRaw(ack.buf, ack.dest);
    if (first) {
      // Accepted: absorb 2xx retransmissions for 64·T1 (timer M, RFC 6026), then forget.
      this.after(64 * this.engine.t1, () => this.terminate());
    }
    if (!first || this.settled) {
      // A second (forked) answer, or an answer after we gave up: confirm it, then hang it up.
      this.log.info({ status: res.status, forked: !first }, '2xx for an INVITE we no longer want: ACK + BYE');
      void dialog.bye(first ? 'cancelled' : 'forked');
      return;
    }
    this.settled = true;
    this.disposeListeners();
    this.log.info({ status: res.status, toTag }, 'INVITE answered; ACK sent');
    this.resolve({
      dialog,
      sdp: res.body,
      status: res.status,
      headers: res.headers,
      dest: { address: this.dest.address, port: this.dest.port, transport: this.dest.transport },
    });
  }

  private onFailure(res: SipResponse): void {
    if (this.state === 'completed') {
      if (this.nonAck) this.engine.sendRaw(this.nonAck, this.dest); // retransmitted final: ACK again
      return;
    }
    if (this.state !== 'calling' && this.state !== 'proceeding') return;
    this.stopA();
    this.state = 'completed';
    this.nonAck = this.buildNon2xxAck(res);
    this.engine.sendRaw(this.nonAck, this.dest);
    // Timer D: stay to re-ACK retransmitted finals (UDP only), then terminate.
    if (this.dest.transport === 'udp') this.after(Math.min(32_000, 64 * this.engine.t1), () => this.terminate());
    else this.terminate();
    const text = `${res.status} ${res.reason}`.trim();
    this.log.info({ status: res.status, reason: res.reason }, 'INVITE refused; ACK sent');
    this.giveUp(
      new GatewayError('upstream', `INVITE to ${this.opts.uri} refused: ${text}`, this.opts.callId, {
        details: {
          status: res.status,
          reason: res.reason,
          ...(res.status === 503 ? { failover: true } : {}),
          ...((res.status === 401 || res.status === 407) && this.opts.credentials ? { challenge: res } : {}),
        },
      }),
    );
  }

  /**
   * RFC 3262 §4: a reliable 18x (Require: 100rel, RSeq) gets a PRACK in its early dialog, once per
   * RSeq (a retransmitted 18x is not PRACKed again: our PRACK's own transaction retransmits it).
   */
  private prackIfReliable(res: SipResponse): void {
    const rseq = Number(res.headers.get('rseq'));
    if (!Number.isInteger(rseq) || rseq <= this.lastRseq) return;
    const prack = buildPrack(this.req, res, this.lastCseq + 1);
    if (!prack) return;
    this.lastRseq = rseq;
    this.lastCseq++;
    const u = parseUri(prack.target);
    const first = prack.req.headers.get('route');
    const hop = first ? parseUri(parseNameAddr(first)?.uri ?? '') : u;
    const dest: Dest =
      this.dest.transport === 'udp' && hop?.host && hop.scheme !== 'tel'
        ? { address: hop.host, port: hop.port ?? 5060, transport: 'udp' }
        : this.dest;
    prack.req.headers.set('user-agent', this.engine.userAgent);
    this.log.info({ rseq, status: res.status }, 'reliable provisional response: sending PRACK');
    this.engine
      .request(prack.req, dest)
      .then((r) => this.log.info({ status: r.status, rseq }, 'PRACK answered'))
      .catch((err: unknown) => this.log.warn({ err: (err as Error).message, rseq }, 'PRACK not answered'));
  }

  /** ACK for a non-2xx final (RFC 3261 §17.1.1.3): same branch and Request-URI, their To tag. */
  private buildNon2xxAck(res: SipResponse): Buffer {
    const h = new SipHeaders();
    h.add('via', this.req.headers.get('via')!);
    h.add('max-forwards', '70');
    for (const r of this.req.headers.getAll('route')) h.add('route', r);
    h.add('from', this.req.headers.get('from')!);
    h.add('to', res.headers.get('to') ?? this.req.headers.get('to')!);
    h.add('call-id', this.req.headers.get('call-id')!);
    h.add('cseq', `${this.cseq} ACK`);
    h.add('user-agent', this.engine.userAgent);
    return serialize({ kind: 'request', method: 'ACK', uri: this.req.uri, headers: h, body: '' });
  }

  private makeDialog(res: SipResponse): EmbeddedDialog {
    const contact = parseNameAddr(res.headers.get('contact') ?? '')?.uri;
    const to = res.headers.get('to') ?? this.req.headers.get('to')!;
    const from = this.req.headers.get('from')!;
    const dialog = new EmbeddedDialog(this.engine, {
      callId: this.req.headers.get('call-id')!,
      localTag: tagOf(from)!,
      localUri: from,
      remoteUri: to,
      remoteTarget: contact ?? this.req.uri,
      // The UAC's route set is the 2xx's Record-Route in reverse (RFC 3261 §12.1.2).
      routeSet: splitNameAddrs(res.headers.getAll('record-route')).reverse(),
      remoteAllow: res.headers.getAll('allow').join(', ') || undefined,
      remoteSeq: 0,
      localSeq: this.lastCseq, // above any PRACK we sent in the early dialog
      src: this.dest,
      secure: /^sips:/i.test(this.req.uri),
    });
    this.engine.addDialog(dialog);
    return dialog;
  }

  private giveUp(err: GatewayError): void {
    if (this.settled) return;
    this.settled = true;
    this.disposeListeners();
    this.reject(err);
  }

  private cancel(): void {
    if (this.cancelWanted) return;
    this.cancelWanted = true;
    if (this.state === 'proceeding') this.sendCancel();
    // In 'calling' the CANCEL waits for a provisional; timer B ends a silent transaction.
  }

  /** CANCEL (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, CSeq number and branch as the INVITE. */
  private sendCancel(): void {
    if (this.cancelSent || this.state !== 'proceeding') return;
    this.cancelSent = true;
    const h = new SipHeaders();
    for (const r of this.req.headers.getAll('route')) h.add('route', r);
    h.add('from', this.req.headers.get('from')!);
    h.add('to', this.req.headers.get('to')!);
    h.add('call-id', this.req.headers.get('call-id')!);
    h.add('cseq', `${this.cseq} CANCEL`);
    const reason = this.opts.cancelReason?.();
    if (reason) h.add('reason', reason);
    const cancel: SipRequest = { kind: 'request', method: 'CANCEL', uri: this.req.uri, headers: h, body: '' };
    this.log.info('sending CANCEL');
    this.engine
      .request(cancel, this.dest, undefined, this.branch)
      .then((r) => this.log.info({ status: r.status }, 'CANCEL answered'))
      .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'CANCEL not answered'));
    // No final response to the INVITE within 64·T1 of the CANCEL: the transaction is gone (§9.1).
    this.after(64 * this.engine.t1, () => {
      if (this.state === 'proceeding') this.terminate();
    });
  }

  private disposeListeners(): void {
    for (const d of this.disposers.splice(0)) d();
  }

  private terminate(): void {
    if (this.state === 'terminated') return;
    this.state = 'terminated';
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.disposeListeners();
    this.engine.forgetUacTx(this.key, this);
  }

  /** Engine shutdown: stop every timer; a caller still waiting learns the engine is gone. */
  dispose(): void {
    this.giveUp(new GatewayError('leg_closed', 'SIP engine stopped', this.opts.callId));
    this.terminate();
  }
}
