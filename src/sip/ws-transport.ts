import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from '../core/logger.js';
import type { LogSampler } from './flood.js';

/** The RFC 7118 subprotocol a SIP WebSocket client must ask for (Sec-WebSocket-Protocol: sip). */
export const SIP_SUBPROTOCOL = 'sip';

export interface WsTransportOptions {
  log: Logger;
  sampler: LogSampler;
  /** Open connections at once; more upgrades get 503. */
  maxConnections: number;
  /** Largest SIP message in one WebSocket message; a peer sending more is cut off (1009). */
  maxMessageBytes: number;
  /** A connection with no traffic for this long and no dialog or transaction on it is closed. */
  idleMs: number;
  /** Whether a dialog or transaction still uses the connection keyed `address:port`. */
  inUse(key: string): boolean;
  /** One SIP message (a WebSocket message is exactly one, RFC 7118 §5) and where it came from. */
  onMessage(buf: Buffer, src: { address: string; port: number; transport: 'ws' | 'wss' }): void;
}

interface WsConn {
  socket: WebSocket;
  idle: NodeJS.Timeout | undefined;
}

/**
 * SIP over WebSocket (RFC 7118), server side only: browsers connect to us (they are not reachable
 * any other way), so every response and in-dialog request goes back over the connection the peer
 * opened, found by the peer's address:port. `ws` does the WebSocket protocol; this class only
 * checks the upgrade (subprotocol `sip`, same-origin, connection cap) and moves messages.
 */
export class SipWsTransport {
  private readonly wss: WebSocketServer;
  private readonly conns = new Map<string, WsConn>();
  private closed = false;

  constructor(private readonly opts: WsTransportOptions) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: opts.maxMessageBytes,
      // RFC 7118 §4: the server must pick `sip` or refuse; a client without it is not a SIP client.
      handleProtocols: (protocols) => (protocols.has(SIP_SUBPROTOCOL) ? SIP_SUBPROTOCOL : false),
      perMessageDeflate: false,
    });
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** An HTTP upgrade request for the SIP path: checked, then handed to `ws`. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const peer = `${(req.socket.remoteAddress ?? '').replace(/^::ffff:/, '')}:${req.socket.remotePort ?? 0}`;
    const refuse = (status: number, why: string) => {
      this.opts.sampler.warn(`ws-${status}`, { peer, why }, 'SIP WebSocket upgrade refused');
      socket.end(`HTTP/1.1 ${status} ${why}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (this.closed) return refuse(503, 'Service Unavailable');
    const protocols = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim().toLowerCase());
    if (!protocols.includes(SIP_SUBPROTOCOL)) return refuse(400, 'Bad Request (subprotocol sip required)');
    // Cross-site WebSocket hijacking: a page from another origin must not drive our SIP stack
    // through a visitor's browser. Non-browser clients send no Origin.
    const origin = req.headers.origin;
    if (origin !== undefined && !sameOrigin(origin, req.headers.host)) return refuse(403, 'Forbidden (origin)');
    if (this.conns.size >= this.opts.maxConnections) return refuse(503, 'Service Unavailable (too many connections)');
    this.wss.handleUpgrade(req, socket, head, (ws) => this.track(ws, req));
  }

  private track(ws: WebSocket, req: IncomingMessage): void {
    const address = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const port = req.socket.remotePort ?? 0;
    const key = `${address}:${port}`;
    const transport = (req.socket as { encrypted?: boolean }).encrypted ? 'wss' : 'ws';
    const conn: WsConn = { socket: ws, idle: undefined };
    this.conns.set(key, conn);
    this.opts.log.info({ peer: key, transport }, 'SIP WebSocket connected');
    const arm = () => {
      clearTimeout(conn.idle);
      conn.idle = setTimeout(() => {
        if (this.opts.inUse(key)) return arm();
        this.opts.log.info({ peer: key }, 'closing idle SIP WebSocket');
        ws.close(1000, 'idle');
      }, this.opts.idleMs);
    };
    arm();
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      arm();
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      this.opts.onMessage(buf, { address, port, transport });
    });
    ws.on('error', (err) => this.opts.log.debug({ err: err.message, peer: key }, 'SIP WebSocket error'));
    ws.on('close', (code) => {
      clearTimeout(conn.idle);
      if (this.conns.get(key) === conn) this.conns.delete(key);
      this.opts.log.info({ peer: key, code }, 'SIP WebSocket closed');
    });
  }

  /** Whether the peer's connection is still open (a browser that closed its tab is gone for good). */
  isOpen(address: string, port: number): boolean {
    return this.conns.get(`${address}:${port}`)?.socket.readyState === 1;
  }

  /** Send one SIP message as one text message (sip.js and RFC 7118 clients read text frames). */
  send(buf: Buffer, address: string, port: number): boolean {
    const conn = this.conns.get(`${address}:${port}`);
    if (!conn || conn.socket.readyState !== 1) {
      this.opts.log.warn({ peer: `${address}:${port}` }, 'SIP WebSocket gone: message not sent');
      return false;
    }
    conn.socket.send(buf.toString('utf8'));
    return true;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.conns.values()) {
      clearTimeout(c.idle);
      c.socket.close(1001, 'shutting down');
    }
    // A peer that never answers the close handshake is cut after a moment.
    await new Promise((r) => setTimeout(r, 50));
    for (const c of this.conns.values()) c.socket.terminate();
    this.conns.clear();
    await new Promise<void>((r) => this.wss.close(() => r()));
  }
}

function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return !!host && new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}
