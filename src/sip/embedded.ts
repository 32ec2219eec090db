import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import type { SipEngine, SipEngineEvents } from './engine.js';
import { EmbeddedDialog, uasDialogInit } from './dialog.js';
import {
  makeResponse,
  parseCSeq,
  parseVia,
  headerTokens,
  sdpOf,
  serialize,
  tagOf,
  validateRequest,
  type SipRequest,
  type SipResponse,
} from './message.js';
import type { StreamLimits } from './stream-transport.js';
import { SipTransports, type SipTransportsOptions } from './transports.js';
import {
  ACCEPT,
  ALLOW,
  ClientTx,
  type Dest,
  InviteTx,
  isWebSocket,
  mergeKey,
  newBranch,
  stampVia,
  ServerTransactions,
  SUPPORTED,
  type Transport,
} from './transactions.js';
import { SipUac, type InviteOptions, type InviteResult, type UacTx } from './uac.js';
import { type Admission, DEFAULT_FLOOD_LIMITS, type FloodLimits, InboundGuard, type RejectReason } from './flood.js';

// Importers (uac.ts, front.ts, tests) get the engine's parts from here as before the split.
export { EmbeddedDialog, type DialogInit } from './dialog.js';
export { ALLOW, type Dest, type DialTransport, newBranch, newTag, SUPPORTED, type Transport } from './transactions.js';
export { SipStreamFramer } from './stream-transport.js';

/**
 * The embedded SIP engine: SIP over UDP, TCP and TLS in-process. This module is its dispatch:
 * matching each request or response to its transaction (transactions.ts) or dialog (dialog.ts); the
 * sockets are in transports.ts, the UAC side (INVITEs we place) in uac.ts on the same dialogs.
 * Hand-written (see message.ts for why no npm SIP stack): the RFC 3261 subset a trunk-facing UA needs.
 */
export interface EmbeddedEngineOptions extends Pick<
  SipTransportsOptions,
  'host' | 'port' | 'tls' | 'publicAddress' | 'publicAddress6' | 'webSocket'
> {
  log: Logger;
  t1Ms?: number;
  t2Ms?: number;
  userAgent?: string;
  /** Flood resistance (src/sip/flood.ts): who may open transactions, and the limits. */
  isKnownSource?: (address: string) => boolean;
  unknownSource?: 'reject' | 'drop';
  limits?: Partial<FloodLimits & StreamLimits>;
  onReject?: (reason: RejectReason, method: string) => void;
  /** Every message sent or received (parsed ones), for per-call SIP ladders (src/sip/ladder.ts). */
  onTrace?: (direction: 'in' | 'out', buf: Buffer, peer: Dest) => void;
}

/** The SDP an ACK carries (a delayed offer's answer), '' when none or not usable. */
function ackSdp(req: SipRequest): string {
  const body = sdpOf(req);
  return body.ok ? (body.sdp ?? '') : '';
}

export class EmbeddedSipEngine extends TypedEmitter<SipEngineEvents> implements SipEngine {
  readonly name = 'embedded' as const;
  readonly canRefresh = true;
  /** UDP, TCP and TLS (transports.ts). */
  readonly transports: SipTransports;
  readonly t1: number;
  readonly t2: number;
  private readonly serverTxs: ServerTransactions;
  private readonly invites = new Map<string, InviteTx>(); // by branch
  /** The same INVITEs by Call-ID + our To tag: the ACK for a 2xx is a new transaction (new branch). */
  private readonly invitesByTag = new Map<string, InviteTx>();
  private readonly dialogs = new Map<string, EmbeddedDialog>(); // by Call-ID + our tag
  private readonly clientTxs = new Map<string, ClientTx>(); // by branch
  /** Our INVITE client transactions (UAC), by branch|method: a CANCEL shares its INVITE's branch. */
  private readonly uacTxs = new Map<string, UacTx>();
  private readonly uac = new SipUac(this);
  /** Messages dropped as unparseable (operators see this in describe() and the logs). */
  readonly counters = { received: 0, malformed: 0, badRequests: 0 };
  /** Set by drain(): OPTIONS outside a dialog get 503 (dispatchers stop sending new calls). */
  private draining = false;
  readonly log: Logger;
  private readonly guard: InboundGuard;
  private readonly limits: FloodLimits;

  constructor(private readonly opts: EmbeddedEngineOptions) {
    super();
    this.t1 = opts.t1Ms ?? 500;
    this.t2 = opts.t2Ms ?? 4000;
    this.serverTxs = new ServerTransactions(this.t1);
    this.log = opts.log.child({ component: 'sip-embedded' });
    this.limits = { ...DEFAULT_FLOOD_LIMITS, ...opts.limits };
    this.guard = new InboundGuard({
      isKnownSource: opts.isKnownSource,
      unknownSource: opts.unknownSource ?? 'reject',
      limits: this.limits,
      log: this.log,
      onReject: opts.onReject,
    });
    this.transports = new SipTransports({
      host: opts.host,
      port: opts.port,
      publicAddress: opts.publicAddress,
      publicAddress6: opts.publicAddress6,
      tls: opts.tls,
      webSocket: opts.webSocket,
      log: this.log,
      limits: opts.limits,
      sampler: this.guard.sampler,
      onMessage: (msg, src, raw) => {
        opts.onTrace?.('in', raw, src);
        return msg.kind === 'response' ? this.onResponse(msg) : this.onRequest(msg, src);
      },
      counters: this.counters,
      onError: (err) => this.emit('error', err),
      inUse: (uses) => this.usesConnection(uses),
      releaseDelayMs: this.t1,
    });
  }

  get port(): number {
    return this.transports.port;
  }

  get contact(): string {
    return this.contactFor('udp');
  }

  // Where we are reachable, per transport and peer (transports.ts; IPv6 peers get our IPv6 address).
  contactFor(transport: Transport, secure = false, peer?: string): string {
    return this.transports.contactFor(transport, secure, peer);
  }

  portFor(transport: Transport): number {
    return this.transports.portFor(transport);
  }

  viaFor(transport: Transport, branch: string, peer?: string): string {
    return this.transports.viaFor(transport, branch, peer);
  }

  get userAgent(): string {
    return this.opts.userAgent ?? 'voice-gateway';
  }

  /** Written into Via/Contact/From of requests we originate (IPv4; see contactFor for IPv6 peers). */
  get publicAddress(): string {
    return this.transports.localAddress();
  }

  /** Whether sip.publicAddress was configured (then nothing learnt overrides it). */
  get publicAddressFixed(): boolean {
    return this.transports.publicAddressFixed;
  }

  /** A registrar told us our public address (Via received): Contact, Via and SDP use it from now on. */
  learnPublicAddress(address: string): void {
    if (this.transports.learnAddress(address)) this.log.info({ address }, 'public address learnt (not configured)');
  }

  /**
   * Place an INVITE (UAC, src/sip/uac.ts): resolves with the confirmed dialog and the far end's SDP
   * on 2xx, rejects with a GatewayError on a non-2xx final, timeout (after CANCEL) or abort.
   */
  invite(opts: InviteOptions): Promise<InviteResult> {
    if (!this.transports.started)
      return Promise.reject(new GatewayError('invalid_state', 'SIP engine not started', opts.callId));
    return this.uac.invite(opts);
  }

  addUacTx(key: string, tx: UacTx): void {
    this.uacTxs.set(key, tx);
  }

  forgetUacTx(key: string, tx: UacTx): void {
    if (this.uacTxs.get(key) !== tx) return;
    this.uacTxs.delete(key);
    this.checkRelease(tx.dest);
  }

  async start(): Promise<void> {
    await this.transports.start();
    if (this.opts.tls?.verifyServer === false)
      this.log.warn('sip.tls.verifyServer is false: outbound TLS accepts any server certificate (labs only)');
  }

  ready(): boolean {
    return this.transports.started;
  }

  describe(): Record<string, unknown> {
    const where = `${this.opts.host}:${this.port}`;
    const tls = this.transports.tlsListening ? `${this.opts.host}:${this.transports.tlsPort}` : undefined;
    const ws = this.opts.webSocket ? `http listener /sip (${this.transports.wsConnections} open)` : undefined;
    return { engine: 'embedded', udp: where, tcp: where, tls, ws, contact: this.contact, ...this.counters };
  }

  drain(): void {
    this.draining = true;
  }

  async stop(): Promise<void> {
    // BYE whatever is still up, then give in-flight requests (these BYEs, BYEs from calls that just
    // ended) a moment to be answered before the socket closes.
    for (const d of [...this.dialogs.values()]) void d.bye('shutdown');
    const deadline = Date.now() + Math.min(1000, 2 * this.t1);
    while (this.clientTxs.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    this.serverTxs.clear();
    for (const inv of this.invites.values()) inv.dispose();
    this.invites.clear();
    this.invitesByTag.clear();
    for (const c of this.clientTxs.values()) c.fail(new GatewayError('leg_closed', 'SIP engine stopped'));
    for (const u of [...this.uacTxs.values()]) u.dispose();
    this.uacTxs.clear();
    await this.transports.close();
  }

  /** Active dialogs and pending INVITEs (tests check that calls release their state). */
  get activeState(): { dialogs: number; invites: number; clientTxs: number } {
    return { dialogs: this.dialogs.size, invites: this.invites.size, clientTxs: this.clientTxs.size };
  }

  /** Server transactions held (flood tests check a stranger makes none). */
  get serverTxCount(): number {
    return this.serverTxs.size;
  }

  /** Requests refused before any state, by reason. */
  get rejected(): Readonly<Record<RejectReason, number>> {
    return this.guard.rejected;
  }

  /** INVITE client transactions still held (answered ones absorb 2xx retransmissions for 64·T1). */
  get uacTxCount(): number {
    return this.uacTxs.size;
  }

  sendRaw(buf: Buffer, dest: Dest): void {
    this.opts.onTrace?.('out', buf, dest);
    this.transports.send(buf, dest);
  }

  /**
   * A dialog or transaction over dest is done: once nothing else uses its connection, close it if we
   * opened it (checked a moment later, so a BYE sent as its dialog ends still holds it).
   */
  checkRelease(dest: Dest | undefined): void {
    this.transports.checkRelease(dest);
  }

  /** Whether a dialog or transaction still uses a stream connection (idle ones may then be closed). */
  private usesConnection(uses: (d: Dest | undefined) => boolean): boolean {
    for (const d of this.dialogs.values()) if (uses(d.origin)) return true;
    for (const t of this.clientTxs.values()) if (uses(t.dest)) return true;
    for (const u of this.uacTxs.values()) if (uses(u.dest)) return true;
    return false;
  }

  /** Open stream connections (tests check that outbound ones are closed once their calls are gone). */
  get streamConnections(): { tcp: number; tls: number } {
    return this.transports.streamConnections;
  }

  private onResponse(res: SipResponse): void {
    const via = res.headers.get('via');
    const branch = via ? parseVia(via)?.params.branch : undefined;
    const method = parseCSeq(res.headers.get('cseq'))?.method;
    const uacTx = branch && method ? this.uacTxs.get(`${branch}|${method}`) : undefined;
    if (uacTx) return uacTx.onResponse(res);
    const tx = branch ? this.clientTxs.get(branch) : undefined;
    if (!tx) return; // stray or retransmitted response for a finished transaction
    tx.onResponse(res);
  }

  private isInDialog(req: SipRequest): boolean {
    const toTag = tagOf(req.headers.get('to'));
    return toTag !== undefined && this.dialogs.has(`${req.headers.get('call-id')}|${toTag}`);
  }

  /** A new out-of-dialog transaction: within the source's rate and the engine's caps? */
  private admitNew(req: SipRequest, address: string): Admission | undefined {
    const rate = this.guard.admitRate(req.method, address);
    if (!rate.ok) return rate;
    if (this.serverTxs.size >= this.limits.maxServerTransactions)
      return this.guard.overload(req.method, address, 'too many transactions');
    if (req.method === 'INVITE' && this.dialogs.size + this.invites.size >= this.limits.maxDialogs)
      return this.guard.overload(req.method, address, 'too many calls');
    return undefined;
  }

  /** One response, not remembered and never retransmitted (a flood gets no more from us than it sends). */
  private replyStateless(req: SipRequest, dest: Dest, admission: Admission): void {
    if (admission.ok || !admission.reply || req.method === 'ACK') return;
    if (!req.headers.has('via') || !req.headers.has('call-id') || !req.headers.has('cseq')) return;
    const { status, reason, retryAfter } = admission.reply;
    const res = makeResponse(req, status, reason);
    if (retryAfter !== undefined) res.headers.set('retry-after', String(retryAfter));
    res.headers.set('server', this.userAgent);
    this.sendRaw(serialize(res), dest);
  }

  private txKey(req: SipRequest): string | undefined {
    const branch = parseVia(req.headers.get('via')!)?.params.branch;
    if (!branch) return undefined;
    return `${branch}|${req.method}|${req.headers.get('call-id')}`;
  }

  /** Send a response and remember it on the request's server transaction. */
  respond(req: SipRequest, res: SipResponse, dest: Dest): void {
    res.headers.set('server', this.userAgent);
    const buf = serialize(res);
    this.sendRaw(buf, dest);
    if (req.method === 'ACK') return;
    const key = this.txKey(req);
    if (!key) return;
    const merge = tagOf(req.headers.get('to')) ? undefined : mergeKey(req);
    this.serverTxs.record(key, buf, dest, res.status >= 200, merge);
  }

  reply(
    req: SipRequest,
    dest: Dest,
    status: number,
    reason?: string,
    extra: Record<string, string> = {},
    toTag?: string,
  ): SipResponse {
    const res = makeResponse(req, status, reason, toTag);
    for (const [k, v] of Object.entries(extra)) res.headers.set(k, v);
    this.respond(req, res, dest);
    return res;
  }

  private onRequest(req: SipRequest, from: Dest): void {
    let src = from;
    const inDialog = this.isInDialog(req);
    // Before anything else (even a 400): a stranger gets one stateless answer at most. WebSocket
    // peers passed the upgrade checks and are authenticated per request by the front (digest).
    const admission =
      inDialog || isWebSocket(from.transport) ? undefined : this.guard.admitUnknown(req.method, from.address);
    if (admission && !admission.ok) return this.replyStateless(req, from, admission);
    const invalid = validateRequest(req);
    if (invalid) {
      this.counters.badRequests++;
      this.guard.sampler.warn(
        'malformed',
        { from: `${src.address}:${src.port}`, method: req.method, error: invalid },
        'malformed SIP request',
      );
      // We can only answer if we know where the response goes and what it belongs to.
      if (req.method !== 'ACK' && req.headers.has('via') && req.headers.has('call-id')) {
        const res = makeResponse(req, 400, `Bad Request (${invalid})`);
        res.headers.set('server', this.userAgent);
        this.sendRaw(serialize(res), src);
      }
      return;
    }
    const replyTo = stampVia(req, src);
    const key = req.method === 'ACK' ? undefined : this.txKey(req);
    const tx = key ? this.serverTxs.lookup(key) : undefined;
    if (tx) {
      if (tx.last) this.sendRaw(tx.last, replyTo); // retransmitted request: resend our last response
      return;
    }
    if (!inDialog && req.method !== 'ACK') {
      const refused = this.admitNew(req, replyTo.address);
      if (refused) return this.replyStateless(req, replyTo, refused);
    }
    if (req.method !== 'ACK' && !tagOf(req.headers.get('to'))) {
      // RFC 3261 §16.3 / §8.2.2.2 for out-of-dialog requests: a request that has run out of hops,
      // or a copy of one we already handle arriving by another path (a fork merging back, a loop).
      if (req.headers.get('max-forwards') === '0' && req.method !== 'OPTIONS')
        return void this.reply(req, replyTo, 483);
      if (key && this.serverTxs.isMerged(mergeKey(req), key)) {
        this.log.warn({ sipCallId: req.headers.get('call-id'), method: req.method }, 'merged request: 482');
        return void this.reply(req, replyTo, 482);
      }
    }
    src = replyTo;
    const callId = req.headers.get('call-id')!;
    const toTag = tagOf(req.headers.get('to'));
    switch (req.method) {
      case 'ACK':
        return this.onAck(req, toTag);
      case 'CANCEL':
        return this.onCancel(req, src);
      case 'OPTIONS':
        if (toTag && !this.dialogs.has(`${callId}|${toTag}`)) return void this.reply(req, src, 481);
        if (!toTag && this.draining)
          return void this.reply(req, src, 503, 'Service Unavailable (draining)', { 'retry-after': '60' });
        return void this.reply(req, src, 200, undefined, {
          allow: ALLOW,
          accept: ACCEPT,
          supported: SUPPORTED.join(', '),
        });
      case 'INVITE':
        if (!toTag) return this.onInvite(req, src, from);
      // fall through: re-INVITE
      case 'BYE':
      case 'UPDATE':
      case 'NOTIFY':
      case 'INFO':
      case 'REFER': {
        const dlg = toTag ? this.dialogs.get(`${callId}|${toTag}`) : undefined;
        if (!dlg) return void this.reply(req, src, 481);
        return dlg.onRequest(req, src);
      }
      case 'PRACK': {
        // RFC 3262: in the early dialog of an INVITE we have not answered finally yet.
        const inv = toTag ? this.invitesByTag.get(`${callId}|${toTag}`) : undefined;
        if (inv) return inv.onPrack(req, src);
        return void this.reply(req, src, 481);
      }
      case 'REGISTER':
      case 'SUBSCRIBE':
      case 'MESSAGE':
      case 'PUBLISH':
        return void this.reply(req, src, 405, undefined, { allow: ALLOW });
      default:
        return void this.reply(req, src, 501);
    }
  }

  private onInvite(req: SipRequest, src: Dest, from: Dest): void {
    const branch = parseVia(req.headers.get('via')!)!.params.branch ?? '';
    const unsupported = headerTokens(req.headers, 'require').filter((r) => !SUPPORTED.includes(r));
    if (unsupported.length) return void this.reply(req, src, 420, undefined, { unsupported: unsupported.join(', ') });
    const body = sdpOf(req);
    if (!body.ok) return void this.reply(req, src, 415, `Unsupported Media Type (${body.reason})`, { accept: ACCEPT });
    const inv = new InviteTx(this, req, src, branch, from);
    this.invites.set(branch, inv);
    this.invitesByTag.set(`${inv.callId}|${inv.toTag}`, inv);
    this.reply(req, src, 100);
    if (this.listenerCount('invite') === 0) return inv.reject(503);
    this.emit('invite', inv);
  }

  /**
   * An ACK, matched through maps (never a scan): for a non-2xx final, to the INVITE server
   * transaction by branch (RFC 3261 §17.2.3); for a 2xx, to the INVITE awaiting it by Call-ID and
   * our To tag, else to the dialog (a re-INVITE's 2xx). An ACK for an INVITE with no final
   * response yet (e.g. for a 482 sent to a merged copy) is nobody's.
   */
  private onAck(req: SipRequest, toTag: string | undefined): void {
    const callId = req.headers.get('call-id')!;
    const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
    const branch = parseVia(req.headers.get('via')!)!.params.branch ?? '';
    const byBranch = this.invites.get(branch);
    const inv =
      byBranch?.callId === callId ? byBranch : toTag ? this.invitesByTag.get(`${callId}|${toTag}`) : undefined;
    if (inv && inv.cseq === cseq && inv.final) return inv.onAck(ackSdp(req));
    const dlg = toTag ? this.dialogs.get(`${callId}|${toTag}`) : undefined;
    dlg?.onAck(cseq, ackSdp(req));
  }

  private onCancel(req: SipRequest, src: Dest): void {
    const branch = parseVia(req.headers.get('via')!)!.params.branch ?? '';
    const inv = this.invites.get(branch);
    if (!inv || inv.callId !== req.headers.get('call-id')) return void this.reply(req, src, 481);
    this.reply(req, src, 200, undefined, {}, inv.toTag);
    inv.onCancel();
  }

  forgetInvite(inv: InviteTx): void {
    if (this.invites.get(inv.branch) === inv) this.invites.delete(inv.branch);
    const byTag = `${inv.callId}|${inv.toTag}`;
    if (this.invitesByTag.get(byTag) === inv) this.invitesByTag.delete(byTag);
  }

  /** The UAS dialog our 2xx to `invite` sets up (RFC 3261 §12.1.1), registered for in-dialog requests. */
  addUasDialog(invite: SipRequest, src: Dest, localTag: string): EmbeddedDialog {
    const dialog = new EmbeddedDialog(this, uasDialogInit(invite, src, localTag));
    this.addDialog(dialog);
    return dialog;
  }

  addDialog(d: EmbeddedDialog): void {
    this.dialogs.set(`${d.callId}|${d.localTag}`, d);
  }

  removeDialog(d: EmbeddedDialog): void {
    this.dialogs.delete(`${d.callId}|${d.localTag}`);
    this.checkRelease(d.origin);
  }

  /** Send an in-dialog request as a non-INVITE client transaction (timers E and F). */
  request(req: SipRequest, dest: Dest, timeoutMs = 64 * this.t1, branch = newBranch()): Promise<SipResponse> {
    req.headers.delete('via');
    req.headers.prepend('via', this.viaFor(dest.transport, branch, dest.address));
    req.headers.set('max-forwards', '70');
    req.headers.set('user-agent', this.userAgent);
    return new Promise((resolve, reject) => {
      const tx = new ClientTx(this, branch, serialize(req), dest, Math.min(timeoutMs, 64 * this.t1), resolve, reject);
      this.clientTxs.set(branch, tx);
    });
  }

  forgetClientTx(branch: string): void {
    const tx = this.clientTxs.get(branch);
    this.clientTxs.delete(branch);
    this.checkRelease(tx?.dest);
  }
}
