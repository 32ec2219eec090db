import { readFileSync } from 'node:fs';
import { createConnection, createServer, isIP, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, rootCertificates } from 'node:tls';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { LogSampler } from './flood.js';

/** What one peer may hold of ours over TCP/TLS (flood resistance, issue 12). */
export interface StreamLimits {
  /** Inbound connections at once; more are closed on accept. */
  maxConnections: number;
  /** An inbound connection with no traffic for this long, and no dialog or transaction on it, is closed. */
  connectionIdleSec: number;
  /** Largest SIP message (headers + body) buffered per connection; a peer sending more is cut off. */
  maxMessageBytes: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  maxConnections: 1000,
  connectionIdleSec: 300,
  maxMessageBytes: 64 * 1024,
};

/**
 * Splits a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3: Content-Length frames the body).
 * CRLF keep-alives between messages are skipped.
 */
export class SipStreamFramer {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly maxMessage = DEFAULT_STREAM_LIMITS.maxMessageBytes) {}

  push(chunk: Buffer): { messages: Buffer[]; error?: string } {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const messages: Buffer[] = [];
    for (;;) {
      let start = 0;
      while (start < this.buf.length && (this.buf[start] === 0x0d || this.buf[start] === 0x0a)) start++;
      if (start) this.buf = this.buf.subarray(start);
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.buf.length > this.maxMessage) return { messages, error: 'headers too long' };
        return { messages };
      }
      const head = this.buf.subarray(0, end).toString('latin1');
      const m = /\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)/i.exec(head);
      const len = m ? Number(m[1]) : 0;
      if (end + 4 + len > this.maxMessage) return { messages, error: 'body too long' };
      const total = end + 4 + len;
      if (this.buf.length < total) return { messages };
      messages.push(this.buf.subarray(0, total));
      this.buf = this.buf.subarray(total);
    }
  }
}

export type StreamKind = 'tcp' | 'tls';

/** Where a stream message goes: an address, optionally the connection to reuse and the TLS server name. */
export interface StreamDest {
  address: string;
  port: number;
  /** The connection a request came in on or a dialog was set up over (reused while it is up). */
  conn?: Socket;
  /** TLS: the name to send as SNI and check the certificate against (the URI's host). */
  serverName?: string;
}

/**
 * The one thing TCP and TLS differ in: how sockets are made. Everything else (framing, reuse,
 * connect deadline, errors) is StreamTransport's, shared by both.
 */
export interface SocketFactory {
  /** A listener whose callback gets each accepted, ready connection. */
  createServer(onConn: (s: Socket) => void): Server;
  /** An outbound connection and the event that says it is usable. */
  dial(dest: StreamDest): { socket: Socket; readyEvent: 'connect' | 'secureConnect' };
}

export const tcpSockets: SocketFactory = {
  createServer: (onConn) => createServer(onConn),
  dial: (dest) => ({ socket: createConnection({ host: dest.address, port: dest.port }), readyEvent: 'connect' }),
};

/** File paths from the sip.tls config. */
export interface SipTlsFiles {
  cert?: string;
  key?: string;
  /** Extra trust for outbound connections, on top of the system CAs. */
  ca?: string;
  /** False only in labs: accept any server certificate. */
  verifyServer?: boolean;
}

/**
 * TLS sockets: the listener needs cert + key; outbound connections verify the server against the
 * system CAs plus `ca`, with SNI = the URI's host (never an IP: RFC 6066 forbids it).
 */
export function tlsSockets(files: SipTlsFiles): SocketFactory {
  const read = (p: string, what: string) => {
    try {
      return readFileSync(p, 'utf8');
    } catch (err) {
      throw new GatewayError('config_invalid', `sip.tls.${what}: cannot read ${p}: ${(err as Error).message}`);
    }
  };
  const cert = files.cert ? read(files.cert, 'cert') : undefined;
  const key = files.key ? read(files.key, 'key') : undefined;
  // Node's `ca` replaces the default roots, so the system roots go in explicitly.
  const ca = files.ca ? [...rootCertificates, read(files.ca, 'ca')] : undefined;
  const verify = files.verifyServer ?? true;
  return {
    createServer: (onConn) => {
      if (!cert || !key) throw new GatewayError('config_invalid', 'a SIP TLS listener needs sip.tls.cert and key');
      return createTlsServer({ cert, key }, onConn);
    },
    dial: (dest) => {
      // The certificate is checked against servername (the URI host), else against the address.
      const name = dest.serverName ?? dest.address;
      const socket = tlsConnect({
        host: dest.address,
        port: dest.port,
        servername: isIP(name) ? undefined : name,
        ca,
        rejectUnauthorized: verify,
      });
      return { socket, readyEvent: 'secureConnect' };
    },
  };
}

interface Conn {
  socket: Socket;
  key: string;
  /** Resolves once connected (TLS: handshake and certificate check done). */
  ready: Promise<void>;
  /** We opened it (so we close it when nothing uses it any more). */
  outbound: boolean;
}

export interface StreamTransportOptions {
  kind: StreamKind;
  sockets: SocketFactory;
  log: Logger;
  /** Each framed message with the connection it came on. */
  onMessage(buf: Buffer, src: StreamDest & { conn: Socket }): void;
  /** A peer broke the framing (counted by the engine). */
  onMalformed(): void;
  limits?: StreamLimits;
  /** Whether a dialog or transaction still uses the connection (an idle one in use stays open). */
  inUse?: (socket: Socket) => boolean;
  /** Warnings a flood could repeat (connection cap) go through it. */
  sampler?: LogSampler;
}

/**
 * A SIP stream transport (TCP or TLS, RFC 3261 §18): optional listener, connection reuse by remote
 * address (responses and in-dialog requests go back over the connection a peer opened, RFC 3261
 * §18.1.1 / RFC 5923 practice), Content-Length framing, and outbound connects with a deadline and a
 * clear error (refused, timeout, certificate).
 */
export class StreamTransport {
  private server: Server | undefined;
  private readonly conns = new Map<string, Conn>();
  private readonly bySocket = new Map<Socket, Conn>();
  private open = false;

  constructor(private readonly opts: StreamTransportOptions) {}

  get kind(): StreamKind {
    return this.opts.kind;
  }

  /** The listening port (0 when not listening). */
  get port(): number {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  get listening(): boolean {
    return !!this.server;
  }

  /** Usable for outbound connections (the engine is running). */
  start(): void {
    this.open = true;
  }

  async listen(port: number, host: string): Promise<void> {
    this.open = true;
    const server = this.opts.sockets.createServer((s) => {
      const address = (s.remoteAddress ?? '').replace(/^::ffff:/, '');
      if (this.inboundCount >= this.limits.maxConnections) {
        const what = { peer: `${address}:${s.remotePort}`, max: this.limits.maxConnections };
        this.opts.sampler?.warn(`${this.kind}-cap`, what, `SIP ${this.kind} connection refused: too many connections`);
        s.destroy();
        return;
      }
      const conn = this.track(s, address, s.remotePort ?? 0, false, Promise.resolve());
      this.watchIdle(conn);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    server.on('error', (err) => this.opts.log.error({ err: err.message }, `SIP ${this.kind} listener error`));
    // A failed TLS handshake from a scanner or a misconfigured carrier: log, never crash.
    server.on('tlsClientError', (err: Error) =>
      this.opts.log.warn({ err: err.message }, 'SIP TLS handshake with a client failed'),
    );
  }

  private get limits(): StreamLimits {
    return this.opts.limits ?? DEFAULT_STREAM_LIMITS;
  }

  private get inboundCount(): number {
    let n = 0;
    for (const c of this.bySocket.values()) if (!c.outbound) n++;
    return n;
  }

  /** Close an inbound connection idle for connectionIdleSec unless a dialog or transaction uses it. */
  private watchIdle(conn: Conn): void {
    const idleMs = this.limits.connectionIdleSec * 1000;
    conn.socket.on('timeout', () => {
      // A long call on it: it stays (re-armed; any traffic re-arms it too).
      if (this.opts.inUse?.(conn.socket)) return void conn.socket.setTimeout(idleMs);
      this.opts.log.debug({ peer: conn.key }, `closing idle inbound SIP ${this.kind} connection`);
      this.drop(conn);
    });
    conn.socket.setTimeout(idleMs);
  }

  private keyOf(address: string, port: number): string {
    return `${address.replace(/^::ffff:/, '')}:${port}`;
  }

  private track(socket: Socket, address: string, port: number, outbound: boolean, ready: Promise<void>): Conn {
    const key = this.keyOf(address, port);
    const conn: Conn = { socket, key, ready, outbound };
    this.conns.set(key, conn);
    this.bySocket.set(socket, conn);
    socket.setNoDelay(true);
    const framer = new SipStreamFramer(this.limits.maxMessageBytes);
    socket.on('data', (chunk: Buffer) => {
      const { messages, error } = framer.push(chunk);
      for (const m of messages) this.opts.onMessage(m, { address, port, conn: socket });
      if (error) {
        this.opts.onMalformed();
        this.opts.log.warn({ peer: key, error }, `SIP ${this.kind} stream error: closing connection`);
        socket.destroy();
      }
    });
    socket.on('error', (err) =>
      this.opts.log.debug({ err: err.message, peer: key }, `SIP ${this.kind} connection error`),
    );
    socket.on('close', () => this.drop(conn));
    return conn;
  }

  /** Forget a connection at once (not on its later 'close') and make sure it is gone. */
  private drop(conn: Conn): void {
    if (this.conns.get(conn.key) === conn) this.conns.delete(conn.key);
    this.bySocket.delete(conn.socket);
    conn.socket.destroy();
  }

  /** The live connection a message to dest would use, if any. */
  private existing(dest: StreamDest): Conn | undefined {
    if (dest.conn && !dest.conn.destroyed) {
      const c = this.bySocket.get(dest.conn);
      if (c) return c;
    }
    const c = this.conns.get(this.keyOf(dest.address, dest.port));
    return c && !c.socket.destroyed ? c : undefined;
  }

  private dial(dest: StreamDest): Conn {
    const { socket, readyEvent } = this.opts.sockets.dial(dest);
    const ready = new Promise<void>((resolve, reject) => {
      socket.once(readyEvent, () => resolve());
      socket.once('error', reject);
      socket.once('close', () => reject(new Error('connection closed')));
    });
    ready.catch(() => undefined); // a send-and-forget connect failing is logged, not unhandled
    return this.track(socket, dest.address, dest.port, true, ready);
  }

  /**
   * An open, ready connection to dest (reused when there is one), within timeoutMs. Rejects with a
   * GatewayError naming the cause: refused, timeout, or the certificate problem.
   */
  async connect(dest: StreamDest, timeoutMs: number, callId?: string): Promise<Socket> {
    if (!this.open) throw new GatewayError('invalid_state', 'SIP engine not started', callId);
    const conn = this.existing(dest) ?? this.dial(dest);
    const where = `${dest.serverName && dest.serverName !== dest.address ? `${dest.serverName} ` : ''}${dest.address}:${dest.port}`;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        conn.ready,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new ConnectTimeout()), timeoutMs);
        }),
      ]);
      return conn.socket;
    } catch (err) {
      this.drop(conn);
      if (err instanceof ConnectTimeout)
        throw new GatewayError(
          'timeout',
          `SIP ${this.kind} connection to ${where}: no connection within ${timeoutMs} ms`,
          callId,
        );
      throw new GatewayError(
        'upstream',
        `SIP ${this.kind} connection to ${where} failed: ${describeError(err)}`,
        callId,
        {
          cause: err,
        },
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /** Over the connection the peer opened if it is still up, else an existing or new one to dest. */
  send(buf: Buffer, dest: StreamDest): void {
    if (!this.open) return;
    const conn = this.existing(dest) ?? this.dial(dest);
    conn.socket.write(buf);
  }

  /** Close a connection we opened once nothing uses it (the engine decides); inbound ones stay the peer's. */
  releaseIfOutbound(socket: Socket): void {
    const c = this.bySocket.get(socket);
    if (!c?.outbound) return;
    this.opts.log.debug({ peer: c.key }, `closing idle outbound SIP ${this.kind} connection`);
    socket.end();
    // A peer that never closes its side does not keep the socket: destroy after a grace period.
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  /** The connection dest maps to now (to tell whether a transaction or dialog still uses a socket). */
  socketFor(dest: StreamDest): Socket | undefined {
    return this.existing(dest)?.socket;
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  async close(): Promise<void> {
    this.open = false;
    for (const c of this.bySocket.values()) c.socket.destroy();
    this.conns.clear();
    this.bySocket.clear();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }
}

class ConnectTimeout extends Error {}

/** A connect error as an operator reads it: certificate problems are named as such. */
function describeError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const code = e.code ?? '';
  if (/CERT|SIGNATURE|ALTNAME|ISSUER|SELF_SIGNED/i.test(code))
    return `server certificate rejected: ${e.message} (${code})`;
  return code && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
}
