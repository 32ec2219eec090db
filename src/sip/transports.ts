import { createSocket, type Socket } from 'node:dgram';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { isIP, type Socket as StreamSocket } from 'node:net';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { LogSampler } from './flood.js';
import { hostPort, parseMessage, type SipMessage } from './message.js';
import {
  DEFAULT_STREAM_LIMITS,
  type SipTlsFiles,
  type SocketFactory,
  type StreamLimits,
  StreamTransport,
  tcpSockets,
  tlsSockets,
  type StreamKind,
} from './stream-transport.js';
import { type Dest, isStream, isWebSocket, type Transport } from './transactions.js';
import { SipWsTransport } from './ws-transport.js';

export interface SipTransportsOptions {
  host: string;
  port: number;
  /**
   * Written into Contact and Via (the public address behind NAT). Unset: learnt from a registrar's
   * received/rport (src/sip/registration.ts), else 127.0.0.1.
   */
  publicAddress?: string;
  /** The same for signalling over IPv6 (sip.host an IPv6 address or `::`); else the host, else ::1. */
  publicAddress6?: string;
  /**
   * SIP over TLS (sip.tls): a listener on `port` when cert and key are given; outbound TLS (a
   * `transport=tls` or `sips:` URI) works without them, verifying the server against the system CAs
   * plus `ca`.
   */
  tls?: SipTlsFiles & { port: number };
  log: Logger;
  limits?: Partial<StreamLimits>;
  sampler: LogSampler;
  /** Every parsed message (datagram or framed stream message), with where it came from and its bytes. */
  onMessage(msg: SipMessage, src: Dest, raw: Buffer): void;
  /** The engine's counters: messages received, and dropped as unparseable or broken framing. */
  counters: { received: number; malformed: number };
  /** The UDP socket failed after start. */
  onError(err: Error): void;
  /**
   * Whether a dialog or transaction of the engine still uses a connection: called with a test that
   * says whether a Dest maps to that connection.
   */
  inUse(uses: (dest: Dest | undefined) => boolean): boolean;
  /** How long after a dialog or transaction ends its connection is checked for release (T1). */
  releaseDelayMs: number;
  /** SIP over WebSocket (RFC 7118): accepted on an HTTP listener's upgrade (see handleUpgrade). */
  webSocket?: { maxConnections: number };
}

/**
 * The embedded engine's transports (RFC 3261 §18): one UDP socket, and a TCP and a TLS stream
 * transport; sending to a Dest, outbound connections held for registrations (RFC 5626 flows), and
 * closing outbound connections once no dialog or transaction uses them.
 */
export class SipTransports {
  private socket: Socket | undefined;
  /** TCP and TLS: one stream transport each, differing only in how sockets are made. */
  private streams: Record<StreamKind, StreamTransport> | undefined;
  /** Outbound stream connections to close once no dialog or transaction uses them. */
  private readonly releaseChecks = new Set<StreamSocket>();
  private releaseTimer: NodeJS.Timeout | undefined;
  /** Stream connections kept open for registrations (RFC 5626 flows), with their hold counts. */
  private readonly heldFlows = new Map<StreamSocket, number>();
  /** Our address as a registrar saw it (RFC 3581), by IP version, when not configured. */
  private readonly learnt: { 4?: string; 6?: string } = {};
  /** Bound to an IPv6 address or `::` (dual stack): IPv4 peers appear as ::ffff:a.b.c.d. */
  readonly ipv6: boolean;
  /** SIP over WebSocket, when enabled; its port is the HTTP listener's (set by whoever mounts it). */
  private ws: SipWsTransport | undefined;
  wsPort = 0;

  constructor(private readonly opts: SipTransportsOptions) {
    this.ipv6 = isIP(opts.host) === 6;
  }

  /**
   * The address we write into Via/Contact for a peer: the IPv6 one when we talk to it over IPv6
   * (an IPv6 Contact for an IPv4 peer, or the reverse, would be unreachable for it).
   */
  localAddress(peer?: string): string {
    if (peer && isIP(peer) === 6) {
      const bound = this.opts.host !== '::' ? this.opts.host : undefined;
      return this.opts.publicAddress6 ?? this.learnt[6] ?? (this.ipv6 ? bound : undefined) ?? '::1';
    }
    return this.opts.publicAddress ?? this.learnt[4] ?? '127.0.0.1';
  }

  /**
   * Our Contact for a transport, as `peer` can reach it (IPv6 in brackets); `secure` gives a sips:
   * URI (a dialog set up by a sips: request, RFC 5630).
   */
  contactFor(transport: Transport, secure = false, peer?: string): string {
    const host = this.localAddress(peer);
    if (secure) return `<sips:gateway@${hostPort(host, this.portFor('tls'))}>`;
    return `<sip:gateway@${hostPort(host, this.portFor(transport))};transport=${transport}>`;
  }

  /** A Via header value for a request we send over `transport` to `peer` (sent-by as it reaches us). */
  viaFor(transport: Transport, branch: string, peer?: string): string {
    const sentBy = hostPort(this.localAddress(peer), this.portFor(transport));
    return `SIP/2.0/${transport.toUpperCase()} ${sentBy};branch=${branch};rport`;
  }

  /** Whether sip.publicAddress was configured (then nothing learnt overrides it). */
  get publicAddressFixed(): boolean {
    return this.opts.publicAddress !== undefined;
  }

  /** A registrar told us our public address (Via received); false when nothing changed. */
  learnAddress(address: string): boolean {
    const v = isIP(address) === 6 ? 6 : 4;
    const fixed = v === 6 ? this.opts.publicAddress6 : this.opts.publicAddress;
    if (fixed !== undefined || this.learnt[v] === address) return false;
    this.learnt[v] = address;
    return true;
  }

  /** The UDP (and TCP) port. */
  get port(): number {
    return this.socket?.address().port ?? 0;
  }

  get started(): boolean {
    return !!this.socket;
  }

  /**
   * The port we write into Via/Contact for a transport. TLS: our listener's, else the configured
   * port (with no listener the far end must reuse our connection, which OpenAI and SBCs do).
   */
  portFor(transport: Transport): number {
    if (isWebSocket(transport)) return this.wsPort;
    if (transport !== 'tls') return this.port;
    return this.streams?.tls.port || this.opts.tls?.port || 5061;
  }

  /** Whether a TLS listener is up (in-dialog requests can also reach us on a new connection). */
  get tlsListening(): boolean {
    return !!this.streams?.tls.listening;
  }

  get tlsPort(): number {
    return this.streams?.tls.port ?? 0;
  }

  /** Open stream connections (tests check that outbound ones are closed once their calls are gone). */
  get streamConnections(): { tcp: number; tls: number } {
    return { tcp: this.streams?.tcp.connectionCount ?? 0, tls: this.streams?.tls.connectionCount ?? 0 };
  }

  /**
   * An HTTP upgrade for the SIP WebSocket path (the HTTP server belongs to the gateway). Refused
   * (503) when WebSocket is off or the engine is not running.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!this.ws) return void socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n');
    // Our Contact/Via for WebSocket peers name the port they reached us on.
    this.wsPort = req.socket.localPort ?? this.wsPort;
    this.ws.handleUpgrade(req, socket, head);
  }

  /** Open SIP WebSocket connections. */
  get wsConnections(): number {
    return this.ws?.connectionCount ?? 0;
  }

  async start(): Promise<void> {
    if (this.opts.webSocket) {
      const limits = { ...DEFAULT_STREAM_LIMITS, ...this.opts.limits };
      this.ws = new SipWsTransport({
        log: this.opts.log,
        sampler: this.opts.sampler,
        maxConnections: this.opts.webSocket.maxConnections,
        maxMessageBytes: limits.maxMessageBytes,
        idleMs: limits.connectionIdleSec * 1000,
        inUse: (key) => this.opts.inUse((d) => !!d && isWebSocket(d.transport) && `${d.address}:${d.port}` === key),
        onMessage: (buf, src) => this.receive(buf, src),
      });
    }
    const stream = (kind: StreamKind, sockets: SocketFactory) =>
      new StreamTransport({
        kind,
        sockets,
        log: this.opts.log,
        onMessage: (buf, src) => this.receive(buf, { ...src, transport: kind }),
        onMalformed: () => this.opts.counters.malformed++,
        limits: { ...DEFAULT_STREAM_LIMITS, ...this.opts.limits },
        inUse: (sock) => this.inUse(sock),
        sampler: this.opts.sampler,
      });
    const { host, tls } = this.opts;
    // Reads the certificate files first: a bad path fails start() before anything is bound.
    const streams = { tcp: stream('tcp', tcpSockets), tls: stream('tls', tlsSockets(tls ?? {})) };
    const sock = createSocket({ type: isIP(host) === 6 ? 'udp6' : 'udp4', reuseAddr: false });
    this.socket = sock;
    this.streams = streams;
    sock.on('message', (data, rinfo) =>
      this.receive(data, { address: unmapped(rinfo.address), port: rinfo.port, transport: 'udp' }),
    );
    sock.on('error', (err) => {
      this.opts.log.error({ err: err.message }, 'SIP socket error');
      this.opts.onError(err);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(this.opts.port, host, () => {
          sock.off('error', reject);
          resolve();
        });
      });
      // TCP on the same port number as UDP (carriers switch to TCP for large messages, RFC 3261 §18.1.1).
      await streams.tcp.listen(this.port, host);
      if (tls?.cert && tls.key) {
        await streams.tls.listen(tls.port, host);
        this.opts.log.info({ port: streams.tls.port }, 'SIP TLS listener up');
      } else streams.tls.start(); // outbound TLS only
    } catch (err) {
      await this.close(); // release whatever did bind (a port in use must not leave half an engine)
      throw err;
    }
  }

  private receive(data: Buffer, src: Dest): void {
    const counters = this.opts.counters;
    counters.received++;
    if (data.length <= 4 && data.toString('latin1').trim() === '') return; // CRLF keep-alive (RFC 5626)
    try {
      const parsed = parseMessage(data);
      if (!parsed.ok) {
        counters.malformed++;
        this.opts.sampler.warn(
          'unparseable',
          { from: `${src.transport}:${hostPort(src.address, src.port)}`, error: parsed.error, bytes: data.length },
          'dropped unparseable SIP message',
        );
        return;
      }
      this.opts.onMessage(parsed.msg, src, data);
    } catch (err) {
      // A bug on one message must not take the engine (and every live call) down.
      counters.malformed++;
      this.opts.log.error({ err: (err as Error).message, from: src.address }, 'error handling SIP message');
    }
  }

  async close(): Promise<void> {
    const sock = this.socket;
    this.socket = undefined;
    if (sock) await new Promise<void>((r) => sock.close(() => r()));
    clearTimeout(this.releaseTimer);
    this.releaseTimer = undefined;
    this.releaseChecks.clear();
    const streams = this.streams;
    this.streams = undefined;
    const ws = this.ws;
    this.ws = undefined;
    await Promise.all([streams?.tcp.close(), streams?.tls.close(), ws?.close()]);
  }

  /**
   * Open (or reuse) a stream connection within timeoutMs. Rejects with the cause (refused,
   * timeout, certificate) so a dial fails at once and clearly.
   */
  async connectStream(dest: Dest, timeoutMs: number, callId?: string): Promise<StreamSocket> {
    if (!this.streams || !isStream(dest.transport))
      throw new GatewayError('invalid_state', 'SIP engine not started', callId);
    return this.streams[dest.transport].connect(dest, timeoutMs, callId);
  }

  /**
   * Open (or reuse) a stream connection and keep it open while held (a registration's flow: the
   * carrier sends our calls over it). `onClose` runs once if it drops. Release lets it go idle.
   */
  async holdFlow(dest: Dest, timeoutMs: number, onClose: () => void): Promise<{ release(): void }> {
    const sock = await this.connectStream(dest, timeoutMs);
    this.heldFlows.set(sock, (this.heldFlows.get(sock) ?? 0) + 1);
    let held = true;
    const closed = () => {
      if (!held) return;
      held = false;
      this.heldFlows.delete(sock);
      onClose();
    };
    sock.once('close', closed);
    return {
      release: () => {
        if (!held) return;
        held = false;
        sock.off('close', closed);
        const n = (this.heldFlows.get(sock) ?? 1) - 1;
        if (n > 0) this.heldFlows.set(sock, n);
        else this.heldFlows.delete(sock);
        this.checkRelease({ ...dest, conn: sock });
      },
    };
  }

  /** Whether a WebSocket peer's connection is still open. */
  wsOpen(dest: Dest): boolean {
    return !!this.ws?.isOpen(dest.address, dest.port);
  }

  send(buf: Buffer, dest: Dest): void {
    if (isWebSocket(dest.transport)) return void this.ws?.send(buf, dest.address, dest.port);
    if (isStream(dest.transport)) return this.streams?.[dest.transport].send(buf, dest);
    // A dual-stack socket reaches IPv4 peers at their IPv4-mapped address.
    const address = this.ipv6 && isIP(dest.address) === 4 ? `::ffff:${dest.address}` : dest.address;
    this.socket?.send(buf, dest.port, address, (err) => {
      if (err) this.opts.log.warn({ err: err.message, dest: `${dest.address}:${dest.port}` }, 'SIP send failed');
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
    }, this.opts.releaseDelayMs);
  }

  /** Whether a held flow, dialog or transaction still uses a stream connection. */
  private inUse(sock: StreamSocket): boolean {
    if (this.heldFlows.has(sock)) return true;
    return this.opts.inUse((d) => !!d && this.socketOf(d) === sock);
  }

  private releaseSocket(sock: StreamSocket): void {
    for (const st of Object.values(this.streams ?? {})) st.releaseIfOutbound(sock);
  }
}

/** An IPv4 peer on a dual-stack socket, as the IPv4 address everything else (trunk ACLs, Via) knows. */
const unmapped = (address: string) => (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address) ? address.slice(7) : address);
