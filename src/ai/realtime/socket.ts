import WebSocket from 'ws';
import { GatewayError } from '../../core/errors.js';
import { describeRefusal, onUpgradeRefused } from './protocol.js';

/** How a connect attempt is settled from outside (session.updated, a refused session, the call ending). */
export interface PendingConnect {
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface RealtimeSocketOptions {
  url: string;
  apiKey: string;
  /** Bounds the whole connect: handshake and the session becoming ready. */
  timeoutMs: number;
  callId: string;
  onOpen(): void;
  onMessage(data: WebSocket.RawData): void;
  /** Runs once the attempt is settled, before its promise resolves or rejects. */
  onSettled(): void;
  /** A socket error after the attempt settled (before that, the attempt fails with it). */
  onError(err: Error): void;
  /** The socket closed after the attempt settled. */
  onClosed(code: number, reason: string): void;
}

/**
 * One WebSocket to OpenAI Realtime and the connect attempt around it: `done` resolves when the
 * caller settles `pending` (on session.updated) and rejects, with the socket torn down, on a refused
 * upgrade, an unreachable host, an early close or the timeout.
 */
export function openRealtimeSocket(o: RealtimeSocketOptions): {
  ws: WebSocket;
  pending: PendingConnect;
  done: Promise<void>;
} {
  // Our own timer bounds the whole connect (handshake + session.updated) with one clear message;
  // ws's handshake timeout is only a backstop behind it.
  const ws = new WebSocket(o.url, {
    headers: { Authorization: `Bearer ${o.apiKey}` },
    handshakeTimeout: o.timeoutMs + 1000,
  });
  let resolveDone!: () => void;
  let rejectDone!: (err: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  let settled = false;
  const finish = (err?: Error) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    o.onSettled();
    if (!err) return resolveDone();
    ws.removeAllListeners();
    ws.on('error', () => {}); // a socket being torn down may still report; nothing left to do
    ws.terminate();
    rejectDone(err);
  };
  const fail = (msg: string) => finish(new GatewayError('ai_connect_failed', msg, o.callId));
  const timer = setTimeout(() => fail(`OpenAI Realtime did not get ready within ${o.timeoutMs} ms`), o.timeoutMs);

  onUpgradeRefused(ws, (status, body) => fail(describeRefusal(status, body)));
  ws.on('open', () => o.onOpen());
  ws.on('message', (data: WebSocket.RawData) => o.onMessage(data));
  ws.on('error', (err) => {
    if (!settled) fail(`cannot reach OpenAI Realtime at ${new URL(o.url).host}: ${err.message}`);
    else o.onError(err);
  });
  ws.on('close', (code, reason) => {
    if (!settled) fail(`OpenAI Realtime closed the socket before the session was ready (code ${code})`);
    else o.onClosed(code, reason.toString());
  });
  return { ws, pending: { resolve: () => finish(), reject: (err) => finish(err) }, done };
}

/** Close cleanly when open, without waiting on a peer that never completes the close handshake. */
export function closeRealtimeSocket(ws: WebSocket): void {
  if (ws.readyState !== WebSocket.OPEN) return ws.terminate();
  ws.close(1000, 'call ended');
  const t = setTimeout(() => ws.terminate(), 2000);
  t.unref();
  ws.once('close', () => clearTimeout(t));
}
