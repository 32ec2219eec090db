import { randomBytes } from 'node:crypto';
import type { Socket as StreamSocket } from 'node:net';
import { GatewayError } from '../core/errors.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import type { IncomingInvite, IncomingInviteEvents, SipDialog, SourceAddress } from './engine.js';
import type { EmbeddedDialog } from './dialog.js';
import type { EmbeddedSipEngine } from './embedded.js';
import {
  makeResponse,
  parseCSeq,
  parseVia,
  REASONS,
  sdpOf,
  serialize,
  tagOf,
  type SipRequest,
  type SipResponse,
} from './message.js';
import { ReliableProvisionals, wants100rel } from './prack.js';
import type { StreamDest, StreamKind } from './stream-transport.js';

/**
 * The embedded engine's transaction layer (RFC 3261 §17) and its timers: the server transaction
 * table that absorbs retransmitted requests by resending the last response, the final-response
 * retransmitter (2xx until ACK by the UAS core, §13.3.1.4; non-2xx until ACK, timers G/H), the
 * server INVITE transaction the front sees as an IncomingInvite, and non-INVITE client
 * transactions (timers E/F). Matching messages to these is the engine's dispatch (embedded.ts).
 */

export const ALLOW = 'INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, REFER, NOTIFY, INFO';
export const SUPPORTED = ['timer', 'replaces', '100rel'];
/** Bodies we take: SDP, alone or as a part of multipart/mixed (SIP-I: SDP + ISUP). */
export const ACCEPT = 'application/sdp, multipart/mixed';
/** Headers whose occurrences are one comma list (RFC 3261 §7.3.1): IncomingInvite.header() joins them. */
const LIST_HEADERS = new Set(['require', 'supported', 'allow', 'proxy-require', 'accept', 'unsupported']);
export const newTag = () => randomBytes(6).toString('hex');
export const newBranch = () => `z9hG4bK${randomBytes(8).toString('hex')}`;

/** `ws`/`wss`: SIP over WebSocket (RFC 7118), inbound only (browsers), on the ops HTTP listener. */
export type Transport = DialTransport | 'ws' | 'wss';
/** What we can open towards a peer (a WebSocket is only ever the browser's connection to us). */
export type DialTransport = 'udp' | StreamKind;

export interface Dest extends StreamDest {
  transport: Transport;
  /** The stream connection a request came in on or a dialog was set up over (reused while up). */
  conn?: StreamSocket;
}

export const isStream = (t: Transport): t is StreamKind => t === 'tcp' || t === 'tls';
export const isWebSocket = (t: Transport): t is 'ws' | 'wss' => t === 'ws' || t === 'wss';

/** A server transaction we keep after responding, to absorb retransmissions of its request. */
interface ServerTx {
  last: Buffer | undefined;
  dest: Dest;
  timer: NodeJS.Timeout | undefined;
  merge: string | undefined;
}

/**
 * RFC 3581 / RFC 3261 §18.2.1: stamp the top Via with `received` (the source IP, when it differs
 * from sent-by or rport was asked for) and `rport` (the source port, when asked for), so responses
 * carry where the request really came from; returns where responses go (§18.2.2: over UDP the
 * source IP, and the source port with rport, else the sent-by port).
 */
export function stampVia(req: SipRequest, src: Dest): Dest {
  const top = req.headers.get('via')!;
  const via = parseVia(top);
  if (!via) return src;
  const wantsRport = 'rport' in via.params;
  let stamped = top;
  if (wantsRport) stamped = stamped.replace(/;\s*rport(?:=[^;]*)?/i, `;rport=${src.port}`);
  if (wantsRport || via.host.toLowerCase() !== src.address.toLowerCase())
    stamped = `${stamped.replace(/;\s*received=[^;]*/i, '')};received=${src.address}`;
  if (stamped !== top) req.headers.replaceFirst('via', stamped);
  if (src.transport !== 'udp' || wantsRport) return src;
  return { ...src, port: via.port ?? 5060 };
}

/** Same Call-ID, From tag and CSeq: the same request, whatever the branch (RFC 3261 §8.2.2.2). */
export function mergeKey(req: SipRequest): string {
  return `${req.headers.get('call-id')}|${tagOf(req.headers.get('from'))}|${req.headers.get('cseq')}`;
}

/**
 * Server transactions by key (branch|method|Call-ID): the last response sent for each, so a
 * retransmitted request gets it again; kept 64·T1 after a final response (timer J / the window
 * after a 2xx).
 */
export class ServerTransactions {
  private readonly txs = new Map<string, ServerTx>();
  /** Out-of-dialog requests' merge keys → the transaction that has them (loop/merge detection). */
  private readonly merges = new Map<string, string>();

  constructor(private readonly t1: number) {}

  /** The last response sent on this transaction, or undefined when the transaction is new. */
  lookup(key: string): ServerTx | undefined {
    return this.txs.get(key);
  }

  /** A request whose merge key belongs to another live transaction: a merged (looped, forked) copy. */
  isMerged(merge: string, key: string): boolean {
    const owner = this.merges.get(merge);
    return owner !== undefined && owner !== key;
  }

  /** Remember `buf` as the transaction's last response; a final one starts the absorption window. */
  record(key: string, buf: Buffer, dest: Dest, final: boolean, merge?: string): void {
    let tx = this.txs.get(key);
    if (!tx) {
      tx = { last: undefined, dest, timer: undefined, merge: undefined };
      this.txs.set(key, tx);
      if (merge && !this.merges.has(merge)) {
        this.merges.set(merge, key);
        tx.merge = merge;
      }
    }
    tx.last = buf;
    if (final) {
      clearTimeout(tx.timer);
      // Timer J / after-2xx absorption window: 64·T1 (32 s by default) for UDP.
      tx.timer = setTimeout(() => this.forget(key), 64 * this.t1);
      tx.timer.unref();
    }
  }

  private forget(key: string): void {
    const tx = this.txs.get(key);
    this.txs.delete(key);
    if (tx?.merge && this.merges.get(tx.merge) === key) this.merges.delete(tx.merge);
  }

  get size(): number {
    return this.txs.size;
  }

  clear(): void {
    for (const tx of this.txs.values()) clearTimeout(tx.timer);
    this.txs.clear();
    this.merges.clear();
  }
}

/** Final-response retransmitter shared by INVITE 2xx (until ACK) and non-2xx (until ACK). */
export class Retransmitter {
  private timer: NodeJS.Timeout | undefined;
  private deadline: NodeJS.Timeout | undefined;

  constructor(
    private readonly send: () => void,
    private readonly t1: number,
    private readonly t2: number,
    onGiveUp: () => void,
    /** False over TCP for non-2xx finals (timer G is for unreliable transports only). */
    repeat = true,
  ) {
    // The first transmission went out with respond(); this only repeats it.
    if (repeat) this.schedule(t1);
    this.deadline = setTimeout(() => {
      this.stop();
      onGiveUp();
    }, 64 * t1);
  }

  private schedule(interval: number): void {
    this.timer = setTimeout(() => {
      this.send();
      this.schedule(Math.min(interval * 2, this.t2));
    }, interval);
  }

  stop(): void {
    clearTimeout(this.timer);
    clearTimeout(this.deadline);
    this.timer = undefined;
    this.deadline = undefined;
  }
}

/** Non-INVITE client transaction: retransmit T1, 2·T1, … capped at T2 until a final response. */
export class ClientTx {
  private timer: NodeJS.Timeout | undefined;
  private readonly deadline: NodeJS.Timeout;
  private interval: number;
  private done = false;

  constructor(
    private readonly engine: EmbeddedSipEngine,
    private readonly branch: string,
    private readonly buf: Buffer,
    readonly dest: Dest,
    timeoutMs: number,
    private readonly resolve: (r: SipResponse) => void,
    private readonly reject: (e: Error) => void,
  ) {
    this.interval = engine.t1;
    engine.sendRaw(buf, dest);
    if (dest.transport === 'udp') this.schedule(); // timer E is for unreliable transports only
    this.deadline = setTimeout(
      () => this.fail(new GatewayError('timeout', `no final response within ${timeoutMs} ms`)),
      timeoutMs,
    );
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.engine.sendRaw(this.buf, this.dest);
      this.interval = Math.min(this.interval * 2, this.engine.t2);
      this.schedule();
    }, this.interval);
  }

  onResponse(res: SipResponse): void {
    if (this.done) return;
    if (res.status < 200) {
      this.interval = this.engine.t2; // timer E continues at T2 once proceeding
      return;
    }
    this.finish();
    this.resolve(res);
  }

  fail(err: Error): void {
    if (this.done) return;
    this.finish();
    this.reject(err);
  }

  private finish(): void {
    this.done = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadline);
    this.engine.forgetClientTx(this.branch);
  }
}

/** Server INVITE transaction plus the UAS core's 2xx handling, exposed to the front as IncomingInvite. */
export class InviteTx extends TypedEmitter<IncomingInviteEvents> implements IncomingInvite {
  readonly callId: string;
  readonly cseq: number;
  readonly toTag = newTag();
  readonly source: SourceAddress;
  cancelled = false;
  /** A final response went out (an ACK can only belong to a transaction that has one). */
  final = false;
  private retransmitter: Retransmitter | undefined;
  private acked: (() => void) | undefined;
  private ackFailed: ((e: Error) => void) | undefined;
  private dialog: EmbeddedDialog | undefined;
  /** How many times the 200 OK went out (tests assert the lost-ACK retransmissions). */
  okSends = 1;
  /** RFC 3262: set when the UAC supports or requires 100rel (our 18x are then reliable). */
  private readonly reliable: ReliableProvisionals | undefined;
  /** answer() called while a reliable 18x awaits its PRACK: the 200 goes out after it. */
  private afterPrack: { go: () => void; fail: (e: Error) => void } | undefined;

  constructor(
    private readonly engine: EmbeddedSipEngine,
    readonly req: SipRequest,
    readonly src: Dest,
    readonly branch: string,
    /** Where the INVITE came from (src is where responses go: the Via port without rport). */
    from: Dest = src,
  ) {
    super();
    this.callId = req.headers.get('call-id')!;
    this.cseq = parseCSeq(req.headers.get('cseq'))!.seq;
    this.source = { address: from.address, port: from.port, transport: from.transport };
    if (wants100rel(req.headers))
      this.reliable = new ReliableProvisionals(
        engine.t1,
        (buf) => engine.sendRaw(buf, src),
        () => this.onPrackTimeout(),
      );
  }

  get requestUri(): string {
    return this.req.uri;
  }
  get from(): string {
    return this.req.headers.get('from')!;
  }
  get to(): string {
    return this.req.headers.get('to')!;
  }
  get sdp(): string | undefined {
    const body = sdpOf(this.req); // the engine answered 415 to any other body
    return body.ok ? body.sdp : undefined;
  }
  header(name: string): string | undefined {
    const n = name.toLowerCase();
    if (!LIST_HEADERS.has(n)) return this.req.headers.get(n);
    const all = this.req.headers.getAll(n);
    return all.length ? all.join(', ') : undefined;
  }
  headerList(): { name: string; value: string }[] {
    return this.req.headers.list().map(([name, value]) => ({ name, value }));
  }

  progress(status: 180 | 183): void {
    if (this.final || this.cancelled || this.afterPrack) return;
    if (this.reliable) {
      const res = makeResponse(this.req, status, undefined, this.toTag);
      res.headers.set('contact', this.engine.contactFor(this.src.transport, isSips(this.req), this.src.address));
      res.headers.set('allow', ALLOW);
      res.headers.set('server', this.engine.userAgent);
      return this.reliable.send18x(res);
    }
    this.engine.reply(
      this.req,
      this.src,
      status,
      undefined,
      { contact: this.engine.contactFor(this.src.transport, isSips(this.req), this.src.address) },
      this.toTag,
    );
  }

  /** A PRACK in this INVITE's early dialog: 200 when it acknowledges our reliable 18x, else 481. */
  onPrack(req: SipRequest, src: Dest): void {
    if (!this.reliable?.onPrack(req, this.cseq))
      return void this.engine.reply(req, src, 481, 'Call/Transaction Does Not Exist (no such RSeq)', {}, this.toTag);
    this.engine.reply(req, src, 200, undefined, {}, this.toTag);
    const next = this.afterPrack;
    this.afterPrack = undefined;
    next?.go();
  }

  private onPrackTimeout(): void {
    if (this.final || this.cancelled) return;
    const why = `no PRACK for a reliable provisional response within ${64 * this.engine.t1} ms`;
    this.engine.log.warn({ sipCallId: this.callId }, why);
    this.sendFinalError(500, 'Server Internal Error (no PRACK)', {});
    const waiting = this.afterPrack;
    this.afterPrack = undefined;
    waiting?.fail(new GatewayError('timeout', why));
    this.emit('failed', why);
  }

  reject(status: number, reason?: string, headers: Record<string, string> = {}): void {
    if (this.final || this.cancelled) return;
    this.reliable?.dispose();
    const waiting = this.afterPrack;
    this.afterPrack = undefined;
    waiting?.fail(new GatewayError('leg_closed', `INVITE rejected (${status})`));
    this.sendFinalError(status, reason ?? REASONS[status], headers);
  }

  /** A non-2xx final answer, resent (Timer G/H) until the ACK with the same branch arrives. */
  private sendFinalError(status: number, reason: string | undefined, headers: Record<string, string>): void {
    this.final = true;
    const res = makeResponse(this.req, status, reason, this.toTag);
    for (const [k, v] of Object.entries(headers)) res.headers.set(k, v);
    res.headers.set('server', this.engine.userAgent);
    this.engine.respond(this.req, res, this.src);
    const buf = serialize(res);
    this.retransmitter = new Retransmitter(
      () => this.engine.sendRaw(buf, this.src),
      this.engine.t1,
      this.engine.t2,
      () => this.engine.forgetInvite(this),
      this.src.transport === 'udp',
    );
  }

  answer(sdp: string, headers: Record<string, string> = {}): Promise<SipDialog> {
    if (this.cancelled) return Promise.reject(new GatewayError('leg_closed', 'INVITE was cancelled'));
    if (this.final || this.afterPrack)
      return Promise.reject(new GatewayError('invalid_state', 'INVITE already answered'));
    if (this.reliable?.pending) {
      // RFC 3262 §3: no 2xx while a reliable 18x is unacknowledged (its offer/answer may be open).
      return new Promise<SipDialog>((resolve, reject) => {
        this.afterPrack = { go: () => this.sendOk(sdp, headers).then(resolve, reject), fail: reject };
      });
    }
    return this.sendOk(sdp, headers);
  }

  private sendOk(sdp: string, headers: Record<string, string>): Promise<SipDialog> {
    if (this.cancelled) return Promise.reject(new GatewayError('leg_closed', 'INVITE was cancelled'));
    this.final = true;
    const res = makeResponse(this.req, 200, 'OK', this.toTag);
    res.headers.set('contact', this.engine.contactFor(this.src.transport, isSips(this.req), this.src.address));
    res.headers.set('allow', ALLOW);
    res.headers.set('supported', SUPPORTED.join(', '));
    res.headers.set('server', this.engine.userAgent);
    for (const [k, v] of Object.entries(headers)) res.headers.set(k, v);
    res.headers.set('content-type', 'application/sdp');
    res.body = sdp;
    this.engine.respond(this.req, res, this.src);
    const buf = serialize(res);
    const dialog = this.engine.addUasDialog(this.req, this.src, this.toTag);
    this.dialog = dialog;
    return new Promise<SipDialog>((resolve, reject) => {
      this.acked = () => resolve(dialog);
      this.ackFailed = reject;
      // RFC 3261 §13.3.1.4: the UAS core retransmits the 2xx itself (T1 doubling to T2) until ACK.
      this.retransmitter = new Retransmitter(
        () => {
          this.okSends++;
          this.engine.sendRaw(buf, this.src);
        },
        this.engine.t1,
        this.engine.t2,
        () => this.onAckTimeout(),
      );
    });
  }

  private onAckTimeout(): void {
    this.engine.forgetInvite(this);
    this.engine.log.warn({ sipCallId: this.callId, sent: this.okSends }, 'no ACK for 200 OK within 64*T1; sending BYE');
    const err = new GatewayError('timeout', `no ACK for 200 OK after ${this.okSends} transmissions`);
    void this.dialog?.bye('ack_timeout');
    this.ackFailed?.(err);
  }

  /** The SDP the ACK carried (a delayed offer's answer, RFC 3261 §13.3.1). */
  ackSdp: string | undefined;

  onAck(body = ''): void {
    if (this.acked && body.trim()) this.ackSdp = body;
    this.retransmitter?.stop();
    this.engine.forgetInvite(this);
    if (this.acked) {
      const done = this.acked;
      this.acked = undefined;
      done();
    }
  }

  onCancel(): void {
    if (this.final) return; // too late: the 200 crossed the CANCEL; the caller will BYE
    this.cancelled = true;
    this.reliable?.dispose();
    const waiting = this.afterPrack;
    this.afterPrack = undefined;
    waiting?.fail(new GatewayError('leg_closed', 'INVITE was cancelled'));
    this.sendFinalError(487, 'Request Terminated', {});
    this.emit('cancel');
  }

  dispose(): void {
    this.reliable?.dispose();
    this.retransmitter?.stop();
  }
}

/** A request addressed to a sips: URI: the dialog stays on TLS and our Contact is sips: (RFC 5630). */
export const isSips = (req: SipRequest) => /^sips:/i.test(req.uri);
