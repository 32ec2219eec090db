import { randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIP, type Socket as StreamSocket } from 'node:net';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import type {
  IncomingInvite,
  IncomingInviteEvents,
  ModifyRequest,
  SipDialog,
  SipDialogEvents,
  SipEngine,
  SipEngineEvents,
  SourceAddress,
} from './engine.js';
import {
  makeResponse,
  parseCSeq,
  parseMessage,
  parseNameAddr,
  parseUri,
  parseVia,
  REASONS,
  serialize,
  SipHeaders,
  tagOf,
  validateRequest,
  type SipRequest,
  type SipResponse,
} from './message.js';
import {
  type SipTlsFiles,
  type SocketFactory,
  type StreamDest,
  StreamTransport,
  tcpSockets,
  tlsSockets,
  type StreamKind,
} from './stream-transport.js';
import { SipUac, type InviteOptions, type InviteResult, type UacTx } from './uac.js';

export { SipStreamFramer } from './stream-transport.js';

/**
 * The embedded SIP engine: SIP over UDP, TCP and TLS in-process, UAS side plus the in-dialog requests we send
 * (BYE, REFER); the UAC side (INVITEs we place) is in uac.ts on the same transport and dialogs.
 * The transaction layer is hand-written (see message.ts for why no npm SIP stack): it is the RFC 3261 subset a trunk-facing UAS needs — server transactions that absorb
 * retransmitted requests by resending the last response, the UAS core's 2xx retransmission
 * (T1 doubling to T2 until ACK, give up after 64·T1 and BYE), non-2xx retransmission until ACK
 * (timer G/H), and non-INVITE client transactions (timer E/F).
 */
export interface EmbeddedEngineOptions {
  host: string;
  port: number;
  /** Written into Contact and Via (the public address behind NAT). */
  publicAddress: string;
  log: Logger;
  t1Ms?: number;
  t2Ms?: number;
  userAgent?: string;
  /**
   * SIP over TLS (sip.tls): a listener on `port` when cert and key are given; outbound TLS (a
   * `transport=tls` or `sips:` URI) works without them, verifying the server against the system CAs
   * plus `ca`.
   */
  tls?: SipTlsFiles & { port: number };
}

export const ALLOW = 'INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY, INFO';
export const SUPPORTED = ['timer', 'replaces'];
export const newTag = () => randomBytes(6).toString('hex');
export const newBranch = () => `z9hG4bK${randomBytes(8).toString('hex')}`;

export type Transport = 'udp' | StreamKind;

export interface Dest extends StreamDest {
  transport: Transport;
  /** The stream connection a request came in on or a dialog was set up over (reused while up). */
  conn?: StreamSocket;
}

const isStream = (t: Transport): t is StreamKind => t !== 'udp';

/** A server transaction we keep after responding, to absorb retransmissions of its request. */
interface ServerTx {
  last: Buffer | undefined;
  dest: Dest;
  timer: NodeJS.Timeout | undefined;
}

/** Final-response retransmitter shared by INVITE 2xx (until ACK) and non-2xx (until ACK). */
class Retransmitter {
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

export class EmbeddedSipEngine extends TypedEmitter<SipEngineEvents> implements SipEngine {
  readonly name = 'embedded' as const;
  private socket: Socket | undefined;
  /** TCP and TLS: one stream transport each, differing only in how sockets are made. */
  private streams: Record<StreamKind, StreamTransport> | undefined;
  /** Outbound stream connections to close once no dialog or transaction uses them. */
  private readonly releaseChecks = new Set<StreamSocket>();
  private releaseTimer: NodeJS.Timeout | undefined;
  readonly t1: number;
  readonly t2: number;
  private readonly serverTxs = new Map<string, ServerTx>();
  private readonly invites = new Map<string, InviteTx>(); // by branch
  private readonly dialogs = new Map<string, EmbeddedDialog>(); // by Call-ID + our tag
  private readonly clientTxs = new Map<string, ClientTx>(); // by branch
  /** Our INVITE client transactions (UAC), by branch|method: a CANCEL shares its INVITE's branch. */
  private readonly uacTxs = new Map<string, UacTx>();
  private readonly uac = new SipUac(this);
  /** Datagrams dropped as unparseable (operators see this in describe() and the logs). */
  readonly counters = { received: 0, malformed: 0, badRequests: 0 };
  readonly log: Logger;

  constructor(private readonly opts: EmbeddedEngineOptions) {
    super();
    this.t1 = opts.t1Ms ?? 500;
    this.t2 = opts.t2Ms ?? 4000;
    this.log = opts.log.child({ component: 'sip-embedded' });
  }

  get port(): number {
    return this.socket?.address().port ?? 0;
  }

  get contact(): string {
    return this.contactFor('udp');
  }

  /** Our Contact for a transport; `secure` gives a sips: URI (a dialog set up by a sips: request, RFC 5630). */
  contactFor(transport: Transport, secure = false): string {
    if (secure) return `<sips:gateway@${this.opts.publicAddress}:${this.portFor('tls')}>`;
    return `<sip:gateway@${this.opts.publicAddress}:${this.portFor(transport)};transport=${transport}>`;
  }

  /**
   * The port we write into Via/Contact for a transport. TLS: our listener's, else the configured
   * port (with no listener the far end must reuse our connection, which OpenAI and SBCs do).
   */
  portFor(transport: Transport): number {
    if (transport !== 'tls') return this.port;
    return this.streams?.tls.port || this.opts.tls?.port || 5061;
  }

  /** A Via header value for a request we send over `transport`. */
  viaFor(transport: Transport, branch: string): string {
    return `SIP/2.0/${transport.toUpperCase()} ${this.opts.publicAddress}:${this.portFor(transport)};branch=${branch};rport`;
  }

  /** Whether a TLS listener is up (in-dialog requests can also reach us on a new connection). */
  get tlsListening(): boolean {
    return !!this.streams?.tls.listening;
  }

  get userAgent(): string {
    return this.opts.userAgent ?? 'voice-gateway';
  }

  /** Written into Via/Contact/From of requests we originate. */
  get publicAddress(): string {
    return this.opts.publicAddress;
  }

  /**
   * Place an INVITE (UAC, src/sip/uac.ts): resolves with the confirmed dialog and the far end's SDP
   * on 2xx, rejects with a GatewayError on a non-2xx final, timeout (after CANCEL) or abort.
   */
  invite(opts: InviteOptions): Promise<InviteResult> {
    if (!this.socket) return Promise.reject(new GatewayError('invalid_state', 'SIP engine not started', opts.callId));
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
    const stream = (kind: StreamKind, sockets: SocketFactory) =>
      new StreamTransport({
        kind,
        sockets,
        log: this.log,
        onMessage: (buf, src) => this.onData(buf, { ...src, transport: kind }),
        onMalformed: () => this.counters.malformed++,
      });
    const tlsOpts = this.opts.tls;
    // Reads the certificate files first: a bad path fails start() before anything is bound.
    const streams = { tcp: stream('tcp', tcpSockets), tls: stream('tls', tlsSockets(tlsOpts ?? {})) };
    const sock = createSocket({ type: isIP(this.opts.host) === 6 ? 'udp6' : 'udp4', reuseAddr: false });
    this.socket = sock;
    this.streams = streams;
    sock.on('message', (data, rinfo) => this.onDatagram(data, rinfo));
    sock.on('error', (err) => {
      this.log.error({ err: err.message }, 'SIP socket error');
      this.emit('error', err);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(this.opts.port, this.opts.host, () => {
          sock.off('error', reject);
          resolve();
        });
      });
      // TCP on the same port number as UDP (carriers switch to TCP for large messages, RFC 3261 §18.1.1).
      await streams.tcp.listen(this.port, this.opts.host);
      if (tlsOpts?.cert && tlsOpts.key) {
        await streams.tls.listen(tlsOpts.port, this.opts.host);
        this.log.info({ port: streams.tls.port }, 'SIP TLS listener up');
      } else streams.tls.start(); // outbound TLS only
    } catch (err) {
      await this.stop(); // release whatever did bind (a port in use must not leave half an engine)
      throw err;
    }
    if (tlsOpts?.verifyServer === false)
      this.log.warn('sip.tls.verifyServer is false: outbound TLS accepts any server certificate (labs only)');
  }

  /**
   * Open (or reuse) the stream connection an outbound INVITE goes over, within timeoutMs. Rejects
   * with the cause (refused, timeout, certificate) so a dial fails at once and clearly.
   */
  async connectStream(dest: Dest, timeoutMs: number, callId?: string): Promise<StreamSocket> {
    if (!this.streams || !isStream(dest.transport))
      throw new GatewayError('invalid_state', 'SIP engine not started', callId);
    return this.streams[dest.transport].connect(dest, timeoutMs, callId);
  }

  ready(): boolean {
    return !!this.socket;
  }

  describe(): Record<string, unknown> {
    const where = `${this.opts.host}:${this.port}`;
    const tls = this.streams?.tls.listening ? `${this.opts.host}:${this.streams.tls.port}` : undefined;
    return { engine: 'embedded', udp: where, tcp: where, tls, contact: this.contact, ...this.counters };
  }

  async stop(): Promise<void> {
    // BYE whatever is still up, then give in-flight requests (these BYEs, BYEs from calls that just
    // ended) a moment to be answered before the socket closes.
    for (const d of [...this.dialogs.values()]) void d.bye('shutdown');
    const deadline = Date.now() + Math.min(1000, 2 * this.t1);
    while (this.clientTxs.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const tx of this.serverTxs.values()) clearTimeout(tx.timer);
    this.serverTxs.clear();
    for (const inv of this.invites.values()) inv.dispose();
    this.invites.clear();
    for (const c of this.clientTxs.values()) c.fail(new GatewayError('leg_closed', 'SIP engine stopped'));
    for (const u of [...this.uacTxs.values()]) u.dispose();
    this.uacTxs.clear();
    const sock = this.socket;
    this.socket = undefined;
    if (sock) await new Promise<void>((r) => sock.close(() => r()));
    clearTimeout(this.releaseTimer);
    this.releaseTimer = undefined;
    this.releaseChecks.clear();
    const streams = this.streams;
    this.streams = undefined;
    if (streams) await Promise.all([streams.tcp.close(), streams.tls.close()]);
  }

  /** Active dialogs and pending INVITEs (tests check that calls release their state). */
  get activeState(): { dialogs: number; invites: number; clientTxs: number } {
    return { dialogs: this.dialogs.size, invites: this.invites.size, clientTxs: this.clientTxs.size };
  }

  /** INVITE client transactions still held (answered ones absorb 2xx retransmissions for 64·T1). */
  get uacTxCount(): number {
    return this.uacTxs.size;
  }

  sendRaw(buf: Buffer, dest: Dest): void {
    if (isStream(dest.transport)) return this.streams?.[dest.transport].send(buf, dest);
    this.socket?.send(buf, dest.port, dest.address, (err) => {
      if (err) this.log.warn({ err: err.message, dest: `${dest.address}:${dest.port}` }, 'SIP send failed');
    });
  }

  /** The stream socket a dest maps to now (none for UDP). */
  private socketOf(dest: Dest): StreamSocket | undefined {
    if (!isStream(dest.transport)) return undefined;
    return this.streams?.[dest.transport].socketFor(dest);
  }

  /**
   * A dialog or transaction over dest is done: once nothing else uses its connection, close it if we
   * opened it (checked a moment later, so a BYE sent as its dialog ends still holds it).
   */
  checkRelease(dest: Dest | undefined): void {
    const sock = dest ? this.socketOf(dest) : undefined;
    if (!sock || !this.streams) return;
    this.releaseChecks.add(sock);
    this.releaseTimer ??= setTimeout(() => {
      this.releaseTimer = undefined;
      const socks = [...this.releaseChecks];
      this.releaseChecks.clear();
      for (const s of socks) if (!s.destroyed && !this.inUse(s)) this.releaseSocket(s);
    }, this.t1);
  }

  private inUse(sock: StreamSocket): boolean {
    const uses = (d: Dest | undefined) => !!d && this.socketOf(d) === sock;
    for (const d of this.dialogs.values()) if (uses(d.origin)) return true;
    for (const t of this.clientTxs.values()) if (uses(t.dest)) return true;
    for (const u of this.uacTxs.values()) if (uses(u.dest)) return true;
    return false;
  }

  private releaseSocket(sock: StreamSocket): void {
    for (const st of Object.values(this.streams ?? {})) st.releaseIfOutbound(sock);
  }

  /** Open stream connections (tests check that outbound ones are closed once their calls are gone). */
  get streamConnections(): { tcp: number; tls: number } {
    return { tcp: this.streams?.tcp.connectionCount ?? 0, tls: this.streams?.tls.connectionCount ?? 0 };
  }

  private onDatagram(data: Buffer, rinfo: RemoteInfo): void {
    this.onData(data, { address: rinfo.address, port: rinfo.port, transport: 'udp' });
  }

  private onData(data: Buffer, src: Dest): void {
    this.counters.received++;
    if (data.length <= 4 && data.toString('latin1').trim() === '') return; // CRLF keep-alive (RFC 5626)
    try {
      const parsed = parseMessage(data);
      if (!parsed.ok) {
        this.counters.malformed++;
        this.log.warn(
          { from: `${src.transport}:${src.address}:${src.port}`, error: parsed.error, bytes: data.length },
          'dropped unparseable SIP message',
        );
        return;
      }
      if (parsed.msg.kind === 'response') this.onResponse(parsed.msg);
      else this.onRequest(parsed.msg, src);
    } catch (err) {
      // A bug on one message must not take the engine (and every live call) down.
      this.counters.malformed++;
      this.log.error({ err: (err as Error).message, from: src.address }, 'error handling SIP message');
    }
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
    let tx = this.serverTxs.get(key);
    if (!tx) {
      tx = { last: undefined, dest, timer: undefined };
      this.serverTxs.set(key, tx);
    }
    tx.last = buf;
    if (res.status >= 200) {
      clearTimeout(tx.timer);
      // Timer J / after-2xx absorption window: 64·T1 (32 s by default) for UDP.
      tx.timer = setTimeout(() => this.serverTxs.delete(key), 64 * this.t1);
      tx.timer.unref();
    }
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

  private onRequest(req: SipRequest, src: Dest): void {
    const invalid = validateRequest(req);
    if (invalid) {
      this.counters.badRequests++;
      this.log.warn(
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
    if (req.method !== 'ACK') {
      const key = this.txKey(req);
      const tx = key ? this.serverTxs.get(key) : undefined;
      if (tx) {
        if (tx.last) this.sendRaw(tx.last, src); // retransmitted request: resend our last response
        return;
      }
    }
    const callId = req.headers.get('call-id')!;
    const toTag = tagOf(req.headers.get('to'));
    switch (req.method) {
      case 'ACK':
        return this.onAck(req, toTag);
      case 'CANCEL':
        return this.onCancel(req, src);
      case 'OPTIONS':
        if (toTag && !this.dialogs.has(`${callId}|${toTag}`)) return void this.reply(req, src, 481);
        return void this.reply(req, src, 200, undefined, {
          allow: ALLOW,
          accept: 'application/sdp',
          supported: SUPPORTED.join(', '),
        });
      case 'INVITE':
        if (!toTag) return this.onInvite(req, src);
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
      case 'REGISTER':
      case 'SUBSCRIBE':
      case 'MESSAGE':
      case 'PUBLISH':
      case 'PRACK':
        return void this.reply(req, src, 405, undefined, { allow: ALLOW });
      default:
        return void this.reply(req, src, 501);
    }
  }

  private onInvite(req: SipRequest, src: Dest): void {
    const branch = parseVia(req.headers.get('via')!)!.params.branch ?? '';
    const require = (req.headers.get('require') ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean);
    const unsupported = require.filter((r) => !SUPPORTED.includes(r));
    if (unsupported.length) return void this.reply(req, src, 420, undefined, { unsupported: unsupported.join(', ') });
    const ct = req.headers.get('content-type');
    if (req.body && ct && !/^application\/sdp\b/i.test(ct)) {
      return void this.reply(req, src, 415, undefined, { accept: 'application/sdp' });
    }
    const inv = new InviteTx(this, req, src, branch);
    this.invites.set(branch, inv);
    this.reply(req, src, 100);
    if (this.listenerCount('invite') === 0) return inv.reject(503);
    this.emit('invite', inv);
  }

  private onAck(req: SipRequest, toTag: string | undefined): void {
    const callId = req.headers.get('call-id')!;
    const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
    for (const inv of this.invites.values()) {
      if (inv.callId === callId && inv.cseq === cseq) return inv.onAck();
    }
    const dlg = toTag ? this.dialogs.get(`${callId}|${toTag}`) : undefined;
    dlg?.onAck(cseq);
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
    req.headers.prepend('via', this.viaFor(dest.transport, branch));
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

/** Non-INVITE client transaction: retransmit T1, 2·T1, … capped at T2 until a final response. */
class ClientTx {
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
class InviteTx extends TypedEmitter<IncomingInviteEvents> implements IncomingInvite {
  readonly callId: string;
  readonly cseq: number;
  readonly toTag = newTag();
  readonly source: SourceAddress;
  cancelled = false;
  private final = false;
  private retransmitter: Retransmitter | undefined;
  private acked: (() => void) | undefined;
  private ackFailed: ((e: Error) => void) | undefined;
  private dialog: EmbeddedDialog | undefined;
  /** How many times the 200 OK went out (tests assert the lost-ACK retransmissions). */
  okSends = 1;

  constructor(
    private readonly engine: EmbeddedSipEngine,
    readonly req: SipRequest,
    readonly src: Dest,
    readonly branch: string,
  ) {
    super();
    this.callId = req.headers.get('call-id')!;
    this.cseq = parseCSeq(req.headers.get('cseq'))!.seq;
    this.source = { address: src.address, port: src.port, transport: src.transport };
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
    return this.req.body.trim() ? this.req.body : undefined;
  }
  header(name: string): string | undefined {
    return this.req.headers.get(name);
  }
  headerList(): { name: string; value: string }[] {
    return this.req.headers.list().map(([name, value]) => ({ name, value }));
  }

  progress(status: 180 | 183): void {
    if (this.final || this.cancelled) return;
    this.engine.reply(
      this.req,
      this.src,
      status,
      undefined,
      { contact: this.engine.contactFor(this.src.transport, isSips(this.req)) },
      this.toTag,
    );
  }

  reject(status: number, reason?: string, headers: Record<string, string> = {}): void {
    if (this.final || this.cancelled) return;
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
    if (this.final) return Promise.reject(new GatewayError('invalid_state', 'INVITE already answered'));
    this.final = true;
    const res = makeResponse(this.req, 200, 'OK', this.toTag);
    res.headers.set('contact', this.engine.contactFor(this.src.transport, isSips(this.req)));
    res.headers.set('allow', ALLOW);
    res.headers.set('supported', SUPPORTED.join(', '));
    res.headers.set('server', this.engine.userAgent);
    for (const [k, v] of Object.entries(headers)) res.headers.set(k, v);
    res.headers.set('content-type', 'application/sdp');
    res.body = sdp;
    this.engine.respond(this.req, res, this.src);
    const buf = serialize(res);
    const dialog = new EmbeddedDialog(this.engine, uasDialogInit(this.req, this.src, this.toTag));
    this.dialog = dialog;
    this.engine.addDialog(dialog);
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

  onAck(): void {
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
    this.sendFinalError(487, 'Request Terminated', {});
    this.emit('cancel');
  }

  dispose(): void {
    this.retransmitter?.stop();
  }
}

/** What a dialog is made of (RFC 3261 §12.1), from whichever side set it up. */
export interface DialogInit {
  callId: string;
  localTag: string;
  /** Our party as we write it in From of our requests (a tag is added if it has none). */
  localUri: string;
  /** Their party as we write it in To (with their tag). */
  remoteUri: string;
  remoteTarget: string;
  /** Route set in the order our requests carry it. */
  routeSet: string[];
  /** Highest CSeq seen from them (0: none yet, any is in order). */
  remoteSeq: number;
  /** Our last CSeq (the UAC's INVITE); random when unset. */
  localSeq?: number;
  /** Where the dialog started (fallback target; the stream connection to reuse). */
  src: Dest;
  /** Set up by a sips: request: our Contact is sips: too (RFC 5630). */
  secure?: boolean;
}

/** UAS side (RFC 3261 §12.1.1): from the INVITE we answered. */
function uasDialogInit(invite: SipRequest, src: Dest, localTag: string): DialogInit {
  const remoteUri = invite.headers.get('from')!;
  return {
    callId: invite.headers.get('call-id')!,
    localTag,
    localUri: invite.headers.get('to')!,
    remoteUri,
    remoteTarget: parseNameAddr(invite.headers.get('contact') ?? '')?.uri ?? parseNameAddr(remoteUri)!.uri,
    routeSet: invite.headers.getAll('record-route'),
    remoteSeq: parseCSeq(invite.headers.get('cseq'))!.seq,
    src,
    secure: isSips(invite),
  };
}

/** A request addressed to a sips: URI: the dialog stays on TLS and our Contact is sips: (RFC 5630). */
const isSips = (req: SipRequest) => /^sips:/i.test(req.uri);

/** A dialog (UAS side, or UAC side from src/sip/uac.ts) and its in-dialog requests. */
export class EmbeddedDialog extends TypedEmitter<SipDialogEvents> implements SipDialog {
  readonly callId: string;
  readonly localTag: string;
  readonly remoteTag: string | undefined;
  private readonly localUri: string; // our party (UAS: the INVITE's To; UAC: our From with its tag)
  private readonly remoteUri: string; // their party with their tag
  private remoteTarget: string;
  private readonly routeSet: string[];
  private localSeq: number;
  private remoteSeq: number;
  private readonly src: Dest;
  private readonly secure: boolean;
  private destroyed = false;
  private byeSent: Promise<void> | undefined;
  private pendingReinvite: { cseq: number; rt: Retransmitter } | undefined;

  constructor(
    private readonly engine: EmbeddedSipEngine,
    init: DialogInit,
  ) {
    super();
    this.callId = init.callId;
    this.localTag = init.localTag;
    this.remoteUri = init.remoteUri;
    this.remoteTag = tagOf(this.remoteUri);
    this.localUri = init.localUri;
    this.remoteTarget = init.remoteTarget;
    this.routeSet = init.routeSet;
    this.remoteSeq = init.remoteSeq;
    this.localSeq = init.localSeq ?? Math.floor(Math.random() * 10000) + 1;
    this.src = init.src;
    this.secure = init.secure ?? false;
  }

  /** Where the dialog was set up (its stream connection, if any, is kept while the dialog lives). */
  get origin(): Dest {
    return this.src;
  }

  /**
   * The ACK for our INVITE's 2xx (UAC, RFC 3261 §13.2.2.4): its own transaction-less request to the
   * remote target through the route set, with the INVITE's CSeq number. Returned so the UAC can
   * resend the same bytes for each retransmitted 2xx.
   */
  buildAck(cseq: number): { buf: Buffer; dest: Dest } {
    const headers = new SipHeaders();
    const t = this.dest();
    headers.add('via', this.engine.viaFor(t.transport, newBranch()));
    headers.add('max-forwards', '70');
    for (const r of this.routeSet) headers.add('route', r);
    headers.add('from', /;\s*tag=/i.test(this.localUri) ? this.localUri : `${this.localUri};tag=${this.localTag}`);
    headers.add('to', this.remoteUri);
    headers.add('call-id', this.callId);
    headers.add('cseq', `${cseq} ACK`);
    headers.add('user-agent', this.engine.userAgent);
    return { buf: serialize({ kind: 'request', method: 'ACK', uri: this.remoteTarget, headers, body: '' }), dest: t };
  }

  /** Where in-dialog requests go: the first loose route, else the remote target; the source as fallback. */
  private dest(): Dest {
    const first = this.routeSet[0] ? parseNameAddr(this.routeSet[0])?.uri : undefined;
    const uri = parseUri(first ?? this.remoteTarget);
    if (!uri || uri.scheme === 'tel' || !uri.host) return this.src;
    const wanted = uri.params.transport?.toLowerCase() ?? (uri.scheme === 'sips' ? 'tls' : this.src.transport);
    const transport: Transport = wanted === 'tcp' || wanted === 'tls' ? wanted : 'udp';
    // Over TCP/TLS, reuse the connection the dialog was set up over while it is up (RFC 3261
    // §18.1.1; OpenAI and SBCs expect in-dialog requests both ways on it).
    if (transport === this.src.transport && this.src.conn && !this.src.conn.destroyed) return this.src;
    const port = uri.port ?? (transport === 'tls' ? 5061 : 5060);
    return { address: uri.host, port, transport, serverName: transport === 'tls' ? uri.host : undefined };
  }

  private newRequest(method: string, extra: Record<string, string> = {}, body = ''): SipRequest {
    const headers = new SipHeaders();
    for (const r of this.routeSet) headers.add('route', r);
    const to = this.remoteUri;
    headers.add('from', /;\s*tag=/i.test(this.localUri) ? this.localUri : `${this.localUri};tag=${this.localTag}`);
    headers.add('to', to);
    headers.add('call-id', this.callId);
    headers.add('cseq', `${++this.localSeq} ${method}`);
    headers.add('contact', this.engine.contactFor(this.src.transport, this.secure));
    for (const [k, v] of Object.entries(extra)) headers.set(k, v);
    return { kind: 'request', method, uri: this.remoteTarget, headers, body };
  }

  onRequest(req: SipRequest, src: Dest): void {
    const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
    if (cseq < this.remoteSeq && req.method !== 'ACK')
      return void this.engine.reply(req, src, 500, 'Server Internal Error (CSeq out of order)');
    this.remoteSeq = Math.max(this.remoteSeq, cseq);
    switch (req.method) {
      case 'BYE':
        this.engine.reply(req, src, 200);
        this.engine.log.info({ sipCallId: this.callId }, 'BYE received');
        this.emit('bye');
        this.destroy();
        return;
      case 'INVITE':
      case 'UPDATE':
        return this.onModify(req, src);
      case 'NOTIFY': // REFER progress (message/sipfrag): acknowledged, logged
        this.engine.log.info(
          { sipCallId: this.callId, event: req.headers.get('event'), frag: req.body.split('\r\n')[0] },
          'NOTIFY',
        );
        return void this.engine.reply(req, src, 200);
      case 'INFO':
        return void this.engine.reply(req, src, 200);
      case 'REFER':
        return void this.engine.reply(req, src, 501, 'Not Implemented (transfer from the trunk side)');
    }
  }

  private onModify(req: SipRequest, src: Dest): void {
    const isInvite = req.method === 'INVITE';
    if (isInvite && this.pendingReinvite) return void this.engine.reply(req, src, 491);
    const contact = parseNameAddr(req.headers.get('contact') ?? '')?.uri;
    if (isInvite && contact) this.remoteTarget = contact; // target refresh (RFC 3261 §12.2.2)
    let answered = false;
    const modify: ModifyRequest = {
      sdp: req.body.trim() ? req.body : undefined,
      respond: (a) => {
        if (answered || this.destroyed) return;
        answered = true;
        if ('status' in a) return void this.engine.reply(req, src, a.status, a.reason, {}, this.localTag);
        const res = makeResponse(req, 200, 'OK', this.localTag);
        res.headers.set('contact', this.engine.contactFor(this.src.transport, this.secure));
        res.headers.set('supported', SUPPORTED.join(', '));
        for (const [k, v] of Object.entries(a.headers ?? {})) res.headers.set(k, v);
        res.headers.set('content-type', 'application/sdp');
        res.body = a.sdp;
        this.engine.respond(req, res, src);
        if (!isInvite) return;
        const buf = serialize(res);
        const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
        const rt = new Retransmitter(
          () => this.engine.sendRaw(buf, src),
          this.engine.t1,
          this.engine.t2,
          () => {
            this.pendingReinvite = undefined;
            this.engine.log.warn({ sipCallId: this.callId }, 'no ACK for re-INVITE 200');
          },
        );
        this.pendingReinvite = { cseq, rt };
      },
    };
    this.emit('modify', modify);
    if (!answered) modify.respond({ status: 488 });
  }

  onAck(cseq: number): void {
    if (this.pendingReinvite && this.pendingReinvite.cseq === cseq) {
      this.pendingReinvite.rt.stop();
      this.pendingReinvite = undefined;
    }
  }

  bye(reason = 'normal'): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    this.byeSent ??= (async () => {
      const req = this.newRequest('BYE', { reason: `Q.850;cause=16;text="${reason.replace(/"/g, '')}"` });
      this.engine.log.info({ sipCallId: this.callId, reason }, 'sending BYE');
      const dest = this.dest();
      this.destroy();
      try {
        const res = await this.engine.request(req, dest);
        this.engine.log.info({ sipCallId: this.callId, status: res.status }, 'BYE answered');
      } catch (err) {
        this.engine.log.warn({ sipCallId: this.callId, err: (err as Error).message }, 'BYE not answered');
      }
    })();
    return this.byeSent;
  }

  async refer(target: string, timeoutMs = 8000): Promise<void> {
    if (this.destroyed) throw new GatewayError('leg_closed', 'dialog is gone');
    const req = this.newRequest('REFER', { 'refer-to': `<${target}>`, 'referred-by': this.engine.contact });
    this.engine.log.info({ sipCallId: this.callId, target }, 'sending REFER');
    const res = await this.engine.request(req, this.dest(), timeoutMs);
    if (res.status >= 300) throw new GatewayError('upstream', `REFER rejected: ${res.status} ${res.reason}`);
  }

  async refresh(intervalSec: number, timeoutMs = 8000): Promise<void> {
    if (this.destroyed) throw new GatewayError('leg_closed', 'dialog is gone');
    const req = this.newRequest('UPDATE', {
      'session-expires': `${intervalSec};refresher=uas`,
      supported: 'timer',
    });
    const res = await this.engine.request(req, this.dest(), timeoutMs);
    if (res.status >= 300) throw new GatewayError('upstream', `session refresh rejected: ${res.status} ${res.reason}`);
  }

  private destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pendingReinvite?.rt.stop();
    this.engine.removeDialog(this);
    this.emit('destroyed');
  }
}
