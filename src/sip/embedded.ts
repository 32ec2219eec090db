import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import type { SipEngine, SipEngineEvents } from './engine.js';
import { EmbeddedDialog, uasDialogInit } from './dialog.js';
import { parseCSeq, parseVia, serialize, type SipRequest, type SipResponse } from './message.js';
import { InboundRequests } from './inbound.js';
import type { StreamLimits } from './stream-transport.js';
import { SipTransports, type SipTransportsOptions } from './transports.js';
import { ClientTx, type Dest, type InviteTx, newBranch, type Transport } from './transactions.js';
import { SipUac, type InviteOptions, type InviteResult, type UacTx } from './uac.js';
import { DEFAULT_FLOOD_LIMITS, type FloodLimits, InboundGuard, type RejectReason } from './flood.js';

// Importers (uac.ts, front.ts, tests) get the engine's parts from here as before the split.
export { EmbeddedDialog, type DialogInit } from './dialog.js';
export { ALLOW, type Dest, type DialTransport, newBranch, newTag, SUPPORTED, type Transport } from './transactions.js';
export { SipStreamFramer } from './stream-transport.js';

/**
 * The embedded SIP engine: SIP over UDP, TCP and TLS in-process. This module is its lifecycle and
 * client side; requests we receive are dispatched in inbound.ts to their transaction (transactions.ts)
 * or dialog (dialog.ts); the sockets are in transports.ts, the UAC side (INVITEs we place) in uac.ts.
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

export class EmbeddedSipEngine extends TypedEmitter<SipEngineEvents> implements SipEngine {
  readonly name = 'embedded' as const;
  readonly canRefresh = true;
  /** UDP, TCP and TLS (transports.ts). */
  readonly transports: SipTransports;
  readonly t1: number;
  readonly t2: number;
  private readonly inbound: InboundRequests;
  private readonly dialogs = new Map<string, EmbeddedDialog>(); // by Call-ID + our tag
  private readonly clientTxs = new Map<string, ClientTx>(); // by branch
  /** Our INVITE client transactions (UAC), by branch|method: a CANCEL shares its INVITE's branch. */
  private readonly uacTxs = new Map<string, UacTx>();
  private readonly uac = new SipUac(this);
  /** Messages dropped as unparseable (operators see this in describe() and the logs). */
  readonly counters = { received: 0, malformed: 0, badRequests: 0 };
  readonly log: Logger;
  private readonly guard: InboundGuard;
  private readonly limits: FloodLimits;

  constructor(private readonly opts: EmbeddedEngineOptions) {
    super();
    this.t1 = opts.t1Ms ?? 500;
    this.t2 = opts.t2Ms ?? 4000;
    this.log = opts.log.child({ component: 'sip-embedded' });
    this.limits = { ...DEFAULT_FLOOD_LIMITS, ...opts.limits };
    this.guard = new InboundGuard({
      isKnownSource: opts.isKnownSource,
      unknownSource: opts.unknownSource ?? 'reject',
      limits: this.limits,
      log: this.log,
      onReject: opts.onReject,
    });
    this.inbound = new InboundRequests({
      engine: this,
      dialogs: this.dialogs,
      guard: this.guard,
      limits: this.limits,
      log: this.log,
      offer: (inv) => {
        if (this.listenerCount('invite') === 0) return inv.reject(503);
        this.emit('invite', inv);
      },
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
        return msg.kind === 'response' ? this.onResponse(msg) : this.inbound.onRequest(msg, src);
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
    this.inbound.draining = true;
  }

  async stop(): Promise<void> {
    // BYE whatever is still up, then give in-flight requests (these BYEs, BYEs from calls that just
    // ended) a moment to be answered before the socket closes.
    for (const d of [...this.dialogs.values()]) void d.bye('shutdown');
    const deadline = Date.now() + Math.min(1000, 2 * this.t1);
    while (this.clientTxs.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    this.inbound.clear();
    for (const c of this.clientTxs.values()) c.fail(new GatewayError('leg_closed', 'SIP engine stopped'));
    for (const u of [...this.uacTxs.values()]) u.dispose();
    this.uacTxs.clear();
    await this.transports.close();
  }

  /** Active dialogs and pending INVITEs (tests check that calls release their state). */
  get activeState(): { dialogs: number; invites: number; clientTxs: number } {
    return { dialogs: this.dialogs.size, invites: this.inbound.inviteCount, clientTxs: this.clientTxs.size };
  }

  /** Server transactions held (flood tests check a stranger makes none). */
  get serverTxCount(): number {
    return this.inbound.serverTxs.size;
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

  /** Send a response and remember it on the request's server transaction (inbound.ts). */
  respond(req: SipRequest, res: SipResponse, dest: Dest): void {
    this.inbound.respond(req, res, dest);
  }

  /** Answer a request with `status` (and `extra` headers), remembered like respond(). */
  reply(...args: Parameters<InboundRequests['reply']>): SipResponse {
    return this.inbound.reply(...args);
  }

  forgetInvite(inv: InviteTx): void {
    this.inbound.forgetInvite(inv);
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
