import { randomBytes } from 'node:crypto';
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
  type DialTransport,
  type Transport,
} from './embedded.js';
import { DigestSession, type DigestClientCredentials } from './digest-client.js';
import { hasControlChars, isIdentityUser, isSipUri, isTelUri, requireHeaderValue } from './header-values.js';
import {
  hostPort,
  parseNameAddr,
  parseUri,
  serialize,
  SipHeaders,
  tagOf,
  type SipRequest,
  type SipResponse,
} from './message.js';
import { splitNameAddrs } from './dialog.js';
import { buildPrack } from './prack.js';
import { resolveSipTargets, type SipDnsResolver } from './srv.js';

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
  transport?: DialTransport;
  /** Stream transports: how long opening the TCP/TLS connection may take (default 5 s, capped by timeoutMs). */
  connectTimeoutMs?: number;
  /** Aborting before the answer sends CANCEL (the call ended while ringing). */
  signal?: AbortSignal;
  /** An RFC 3326 Reason for that CANCEL (why the call ended), read when the CANCEL is built. */
  cancelReason?: () => string | undefined;
  /** The gateway call this INVITE belongs to (errors and logs carry it). */
  callId?: string;
  /** Each provisional response (180 ringing, 183 progress). */
  onProvisional?: (status: number, reason: string) => void;
  /** Answer a 401/407 with these (one retry per challenge: same Call-ID and From tag, CSeq + 1). */
  credentials?: DigestClientCredentials;
  /** DNS for RFC 3263 target selection (tests inject one). */
  resolver?: SipDnsResolver;
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

const CONNECT_TIMEOUT_MS = 5000;

/**
 * Every destination for the Request-URI in RFC 3263 order (SRV when the URI has a host name and no
 * port, else A records); the transport from the URI or the override.
 */
export async function resolveTargets(
  uri: string,
  override: DialTransport | undefined,
  callId?: string,
  resolver?: SipDnsResolver,
  ipv6 = false,
): Promise<Dest[]> {
  // AAAA records too when we can signal over IPv6 (sip.host an IPv6 address or `::`).
  const targets = await resolveSipTargets(uri, { transport: override, callId, resolver, family: ipv6 ? 0 : 4 });
  return targets.map((t) => ({ ...t }));
}

/** A failure worth trying the next RFC 3263 target for (§4.3): no answer at all, 503, or no connection. */
function failsOver(err: unknown): boolean {
  const e = err as GatewayError;
  return e.details?.failover === true;
}

export class SipUac {
  constructor(private readonly engine: EmbeddedSipEngine) {}

  async invite(opts: InviteOptions): Promise<InviteResult> {
    const targets = await resolveTargets(
      opts.uri,
      opts.transport,
      opts.callId,
      opts.resolver,
      this.engine.transports.ipv6,
    );
    const e = this.engine;
    const dialogId = {
      sipCallId: `${randomBytes(12).toString('hex')}@${e.publicAddress}`,
      fromTag: newTag(),
      cseq: Math.floor(Math.random() * 10000) + 1,
    };
    const digest = opts.credentials ? new DigestSession(opts.credentials) : undefined;
    for (let i = 0; ; i++) {
      const dest = targets[i]!;
      try {
        return await this.attempt(opts, dest, dialogId, digest);
      } catch (err) {
        if (i + 1 >= targets.length || !failsOver(err) || opts.signal?.aborted) throw err;
        e.log.info(
          { callId: opts.callId, uri: opts.uri, failed: `${dest.transport}:${dest.address}:${dest.port}` },
          `${(err as Error).message}: trying the next target (RFC 3263)`,
        );
        dialogId.cseq++;
      }
    }
  }

  /** One target: connect (streams), INVITE, and the digest round when challenged. */
  private async attempt(
    opts: InviteOptions,
    dest: Dest,
    id: { sipCallId: string; fromTag: string; cseq: number },
    digest: DigestSession | undefined,
  ): Promise<InviteResult> {
    if (opts.signal?.aborted) throw new GatewayError('leg_closed', 'dial aborted before the INVITE', opts.callId);
    const e = this.engine;
    if (isIP(dest.address) === 6 && !e.transports.ipv6)
      throw new GatewayError('config_invalid', `cannot reach IPv6 ${dest.address}: sip.host is IPv4`, opts.callId, {
        details: { failover: true },
      });
    if (dest.transport !== 'udp') {
      // Connect first: a refused connection or a bad certificate fails the dial at once, with its cause.
      const ms = Math.min(opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS, opts.timeoutMs);
      try {
        dest.conn = await e.transports.connectStream(dest, ms, opts.callId);
      } catch (err) {
        const ge = err as GatewayError;
        throw new GatewayError(ge.code ?? 'upstream', ge.message, opts.callId, {
          cause: err,
          details: { ...ge.details, failover: true },
        });
      }
      if (opts.signal?.aborted) {
        e.checkRelease(dest);
        throw new GatewayError('leg_closed', 'dial aborted before the INVITE', opts.callId);
      }
      if (dest.transport === 'tls' && !e.transports.tlsListening)
        e.log.info(
          { callId: opts.callId, uri: opts.uri },
          'no SIP TLS listener: in-dialog requests from the far end must come over our connection',
        );
    }
    // Every value that goes into a header is checked (no CR/LF: header injection).
    const fromUri = opts.from.includes('<')
      ? requireHeaderValue('From', opts.from, (v) => !hasControlChars(v), opts.callId)
      : /^(sips?|tel):/i.test(opts.from)
        ? requireHeaderValue('From', opts.from, (v) => isSipUri(v) || isTelUri(v), opts.callId)
        : `sip:${requireHeaderValue('From', opts.from, isIdentityUser, opts.callId)}@${hostPort(e.transports.localAddress(dest.address))}`;
    const extra = Object.entries(opts.headers ?? {}).map(
      ([k, v]) => [k, requireHeaderValue(k, v, (x) => !hasControlChars(x), opts.callId)] as const,
    );
    const from = `${fromUri.includes('<') ? fromUri : `<${fromUri}>`};tag=${id.fromTag}`;
    const to = opts.to ?? `<${opts.uri}>`;
    let retried = false;
    for (;;) {
      const branch = newBranch();
      const cseq = id.cseq;
      const headers = new SipHeaders();
      headers.add('via', e.viaFor(dest.transport, branch, dest.address));
      headers.add('max-forwards', '70');
      headers.add('from', from);
      headers.add('to', to);
      headers.add('call-id', id.sipCallId);
      headers.add('cseq', `${cseq} INVITE`);
      headers.add('contact', e.contactFor(dest.transport, /^sips:/i.test(opts.uri), dest.address));
      headers.add('allow', ALLOW);
      headers.add('supported', SUPPORTED.join(', '));
      headers.add('user-agent', e.userAgent);
      for (const [k, v] of extra) headers.set(k, v);
      const auth = digest?.authorize('INVITE', opts.uri);
      if (auth) headers.set(auth.name, auth.value);
      headers.set('content-type', 'application/sdp');
      const req: SipRequest = { kind: 'request', method: 'INVITE', uri: opts.uri, headers, body: opts.sdp };
      e.log.info(
        {
          sipCallId: id.sipCallId,
          callId: opts.callId,
          uri: opts.uri,
          dest: `${dest.transport}:${dest.address}:${dest.port}`,
          auth: !!auth,
        },
        'sending INVITE',
      );
      try {
        return await new Promise<InviteResult>((resolve, reject) => {
          new InviteClientTx(e, req, branch, cseq, dest, opts, resolve, reject);
        });
      } catch (err) {
        const details = (err as GatewayError).details;
        const challenge = details?.challenge as SipResponse | undefined;
        if (details) delete details.challenge; // a whole response is not for logs or API callers
        if (!challenge || !digest || opts.signal?.aborted) throw err;
        const v = digest.onChallenge(challenge.status, challenge.headers, retried);
        if (!v.ok) {
          e.log.warn({ callId: opts.callId, status: challenge.status, why: v.why }, 'INVITE challenge not answered');
          throw err;
        }
        // RFC 3261 §22.2: the same Call-ID and From tag, the next CSeq, the challenge already ACKed.
        retried = true;
        id.cseq++;
      }
    }
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
