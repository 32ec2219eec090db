import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { SipDialog } from './engine.js';
import {
  ALLOW,
  type Dest,
  EmbeddedDialog,
  type EmbeddedSipEngine,
  newBranch,
  newTag,
  SUPPORTED,
  type Transport,
} from './embedded.js';
import { hasControlChars, isIdentityUser, isSipUri, isTelUri, requireHeaderValue } from './header-values.js';
import { parseNameAddr, parseUri, serialize, SipHeaders, tagOf, type SipRequest, type SipResponse } from './message.js';

/**
 * The embedded engine's UAC side: INVITEs we place (OpenAI's SIP endpoint, SIP dial-out). Hand-written
 * on the same transport and message code as the UAS (see message.ts for why no npm SIP stack):
 * the RFC 3261 §17.1.1 INVITE client transaction (timer A retransmission over UDP, timer B),
 * ACK for non-2xx within the transaction and for 2xx from the dialog (§13.2.2.4, re-sent for
 * every retransmitted 2xx, RFC 6026), CANCEL (§9.1) when the caller gives up, and the dialog.
 */
export interface InviteOptions {
  /** Request-URI, e.g. `sip:proj_1@sip.api.openai.com;transport=tls` or `sip:+250788@10.0.0.1:5060`. */
  uri: string;
  /** Our party: a user part (`+250788000001`), a SIP URI or a name-addr. */
  from: string;
  /** Their party (To); defaults to the Request-URI. */
  to?: string;
  /** Extra headers, sent as given (e.g. X-Gateway-Call-Id, P-Asserted-Identity). */
  headers?: Record<string, string>;
  /** Our SDP offer. */
  sdp: string;
  /** No final answer within this → CANCEL and reject with a timeout. */
  timeoutMs: number;
  /** Overrides the URI's transport parameter. */
  transport?: Transport;
  /** Stream transports: how long opening the TCP/TLS connection may take (default 5 s, capped by timeoutMs). */
  connectTimeoutMs?: number;
  /** Aborting before the answer sends CANCEL (the call ended while ringing). */
  signal?: AbortSignal;
  /** The gateway call this INVITE belongs to (errors and logs carry it). */
  callId?: string;
  /** Each provisional response (180 ringing, 183 progress). */
  onProvisional?: (status: number, reason: string) => void;
}

export interface InviteResult {
  dialog: SipDialog;
  /** The far end's SDP answer from the 2xx. */
  sdp: string;
  status: number;
  /** The 2xx's headers. */
  headers: SipHeaders;
  /** Where the INVITE went (after DNS). */
  dest: { address: string; port: number; transport: Transport };
}

/** What the engine routes responses to (keyed by branch|method). */
export interface UacTx {
  /** Where its requests go (the engine keeps that stream connection while the transaction lives). */
  readonly dest: Dest;
  onResponse(res: SipResponse): void;
  dispose(): void;
}

const DNS_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 5000;

/** Resolve the Request-URI to a destination: transport from the URI (or override), host by DNS A record. */
export async function resolveTarget(uri: string, override: Transport | undefined, callId?: string): Promise<Dest> {
  const u = parseUri(uri);
  if (!u || u.scheme === 'tel' || !u.host) throw new GatewayError('config_invalid', `not a SIP URI: ${uri}`, callId);
  const wanted = (override ?? (u.scheme === 'sips' ? 'tls' : (u.params.transport?.toLowerCase() ?? 'udp'))) as string;
  if (wanted !== 'udp' && wanted !== 'tcp' && wanted !== 'tls')
    throw new GatewayError('config_invalid', `unsupported SIP transport "${wanted}" in ${uri}`, callId);
  let address = u.host;
  if (!isIP(address)) {
    let timer: NodeJS.Timeout | undefined;
    try {
      // getaddrinfo has no deadline of its own: a stuck resolver must not hold the dial.
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${DNS_TIMEOUT_MS} ms`)), DNS_TIMEOUT_MS);
      });
      address = (await Promise.race([lookup(u.host, { family: 4 }), deadline])).address;
    } catch (err) {
      throw new GatewayError('upstream', `cannot resolve ${u.host}: ${(err as Error).message}`, callId, {
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
  }
  // RFC 3263 §4.2 without SRV: 5061 for TLS, 5060 otherwise. The URI host is the TLS server name.
  return {
    address,
    port: u.port ?? (wanted === 'tls' ? 5061 : 5060),
    transport: wanted,
    serverName: wanted === 'tls' && !isIP(u.host) ? u.host : undefined,
  };
}

export class SipUac {
  constructor(private readonly engine: EmbeddedSipEngine) {}

  async invite(opts: InviteOptions): Promise<InviteResult> {
    const dest = await resolveTarget(opts.uri, opts.transport, opts.callId);
    if (opts.signal?.aborted) throw new GatewayError('leg_closed', 'dial aborted before the INVITE', opts.callId);
    const e = this.engine;
    if (dest.transport !== 'udp') {
      // Connect first: a refused connection or a bad certificate fails the dial at once, with its cause.
      const ms = Math.min(opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS, opts.timeoutMs);
      dest.conn = await e.connectStream(dest, ms, opts.callId);
      if (opts.signal?.aborted) {
        e.checkRelease(dest);
        throw new GatewayError('leg_closed', 'dial aborted before the INVITE', opts.callId);
      }
      if (dest.transport === 'tls' && !e.tlsListening)
        e.log.info(
          { callId: opts.callId, uri: opts.uri },
          'no SIP TLS listener: in-dialog requests from the far end must come over our connection',
        );
    }
    const branch = newBranch();
    const fromTag = newTag();
    const sipCallId = `${randomBytes(12).toString('hex')}@${e.publicAddress}`;
    const cseq = Math.floor(Math.random() * 10000) + 1;
    const fromUri = /^(sips?|tel):/i.test(opts.from)
      ? requireHeaderValue('From', opts.from, (v) => isSipUri(v) || isTelUri(v), opts.callId)
      : `sip:${requireHeaderValue('From', opts.from, isIdentityUser, opts.callId)}@${e.publicAddress}`;
    const from = `<${fromUri}>;tag=${fromTag}`;
    const to = opts.to ?? `<${opts.uri}>`;
    const headers = new SipHeaders();
    headers.add('via', e.viaFor(dest.transport, branch));
    headers.add('max-forwards', '70');
    headers.add('from', from);
    headers.add('to', to);
    headers.add('call-id', sipCallId);
    headers.add('cseq', `${cseq} INVITE`);
    headers.add('contact', e.contactFor(dest.transport, /^sips:/i.test(opts.uri)));
    headers.add('allow', ALLOW);
    headers.add('supported', SUPPORTED.join(', '));
    headers.add('user-agent', e.userAgent);
    for (const [k, v] of Object.entries(opts.headers ?? {}))
      headers.set(
        k,
        requireHeaderValue(k, v, (x) => !hasControlChars(x), opts.callId),
      );
    headers.set('content-type', 'application/sdp');
    const req: SipRequest = { kind: 'request', method: 'INVITE', uri: opts.uri, headers, body: opts.sdp };
    e.log.info(
      { sipCallId, callId: opts.callId, uri: opts.uri, dest: `${dest.transport}:${dest.address}:${dest.port}` },
      'sending INVITE',
    );
    return new Promise<InviteResult>((resolve, reject) => {
      new InviteClientTx(e, req, branch, cseq, dest, opts, resolve, reject);
    });
  }
}

type TxState = 'calling' | 'proceeding' | 'accepted' | 'completed' | 'terminated';

/** One INVITE client transaction plus the UAC core around it (ACK, CANCEL, dialog creation). */
class InviteClientTx implements UacTx {
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
      this.giveUp(new GatewayError('timeout', `no response to INVITE within ${64 * engine.t1} ms`, opts.callId));
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
        details: { status: res.status, reason: res.reason },
      }),
    );
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
      routeSet: res.headers.getAll('record-route').reverse(),
      remoteSeq: 0,
      localSeq: this.cseq,
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
