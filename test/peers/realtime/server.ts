import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { RealtimeServerEvent, RealtimeSessionCreateRequest } from 'openai/resources/realtime/realtime';
import { WebSocketServer, type WebSocket } from 'ws';
import { concat } from '../../support/audio.js';
import { onMessage } from './events.js';
import type { ClientEventOf, ClientEventType, SessionConfig } from './schemas.js';
import { commit, makeVad, speechStarted } from './turns.js';
import type { Conn, ConnectionRecord, RealtimeTestServerOptions, ServerContext, ServerOptions } from './types.js';

export type {
  AnswerRecord,
  ConnectionRecord,
  RealtimeTestServerOptions,
  ReceivedEvent,
  ScriptedToolCall,
} from './types.js';

/**
 * A local stand-in for the OpenAI Realtime WebSocket API (GA event protocol). It checks every
 * client event against the published shapes (test/peers/realtime/schemas.ts), runs its own energy
 * VAD on the decoded caller audio, and answers each caller turn with a tone whose frequency
 * encodes the response number on that connection: 400 + 200·n Hz (turn 1 → 600 Hz, 2 → 800 Hz ...),
 * sent in bursts faster than real time like the real service. Server events are typed with the
 * `openai` package's RealtimeServerEvent, so a client tested here sees the real shapes.
 *
 * Unkind like the real service, on options: irregular delta sizes (odd byte counts, not
 * frame-aligned) and slower-than-real-time streaming (stream.ts), a session time limit that ends
 * with an `error` (session_expired) and a clean close 1001. Always: `rate_limits.updated` at each
 * response, transcript deltas before each transcript's `.done`/`.completed`, a VAD that needs
 * `vadStartMs` of speech before speech_started and `silence_duration_ms` of quiet before
 * speech_stopped, and on a SIP call's sideband `output_audio_buffer.started/stopped/cleared` timed
 * as OpenAI's own real-time playout of the answer on the SIP leg.
 *
 * This file owns the HTTP/WebSocket handshake, the connections and their timers; client events are
 * in events.ts, caller turns and VAD in turns.ts, answers in responses.ts, sideband playout in
 * sideband.ts (types.ts has the records and options).
 */
export class RealtimeTestServer {
  readonly connections: ConnectionRecord[] = [];
  /** Every client event that was not valid protocol; a conforming client leaves this empty. */
  readonly violations: string[] = [];
  /** Called as each server event is sent (after it is written), for tests that act on one. */
  onSent: ((connection: number, type: string) => void) | undefined;
  private readonly opts: ServerOptions;
  private http: Server | undefined;
  private wss: WebSocketServer | undefined;
  private readonly live = new Set<Conn>();
  private eventSeq = 0;
  /** WebSocket upgrade attempts, refused ones included. */
  attempts = 0;
  /** What the parts (events, turns, responses, sideband) act through. */
  private readonly ctx: ServerContext;

  constructor(options: RealtimeTestServerOptions = {}) {
    this.opts = {
      toneMs: 1500,
      speedup: 8,
      chunkMs: 100,
      vadThresholdDbfs: -40,
      dropConnections: 1,
      vadStartMs: 200,
      ...options,
    };
    this.ctx = {
      opts: this.opts,
      send: (c, ev) => this.send(c, ev),
      sendError: (c, code, message, clientEventId) => this.sendError(c, code, message, clientEventId),
      violation: (c, what, clientEventId) => this.violation(c, what, clientEventId),
      later: (c, ms, fn) => this.later(c, ms, fn),
    };
  }

  /** Change behaviour between calls (e.g. start refusing). */
  configure(options: Partial<RealtimeTestServerOptions>): void {
    Object.assign(this.opts, options);
  }

  get url(): string {
    const addr = this.http?.address() as AddressInfo | null;
    if (!addr) throw new Error('RealtimeTestServer not started');
    return `ws://127.0.0.1:${addr.port}/v1/realtime`;
  }

  /** Connections currently open. */
  get openConnections(): number {
    return this.live.size;
  }

  async start(port = 0): Promise<void> {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 16 << 20 });
    this.http = createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'application/json' }).end('{"error":{"message":"upgrade required"}}');
    });
    this.http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.upgrade(req, socket, head));
    await new Promise<void>((resolve) => this.http!.listen(port, '127.0.0.1', resolve));
  }

  async stop(): Promise<void> {
    for (const c of this.live) {
      this.cleanup(c);
      c.ws.terminate();
    }
    this.live.clear();
    await new Promise<void>((r) => (this.wss ? this.wss.close(() => r()) : r()));
    await new Promise<void>((r) => {
      if (!this.http) return r();
      this.http.closeAllConnections();
      this.http.close(() => r());
    });
  }

  /** Resolve when `pred` holds (polled every 10 ms); reject after `timeoutMs`. */
  async until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const t0 = Date.now();
    while (!pred()) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Send raw text on an open connection, e.g. a malformed event, to test a client's robustness. */
  inject(raw: string, index = 0): void {
    for (const c of this.live) if (c.rec.index === index) c.ws.send(raw);
  }

  /**
   * Sideband mode: the caller said `transcript` on the SIP leg (audio this server never sees); run
   * that caller turn as the VAD would: speech events, commit, transcription, answer (or tool call).
   */
  callerTurn(transcript: string, index = 0): void {
    const c = [...this.live].find((x) => x.rec.index === index);
    if (!c) throw new Error(`no open connection ${index}`);
    speechStarted(this.ctx, c, true);
    const itemId = c.speechItem!;
    this.send(c, { type: 'input_audio_buffer.speech_stopped', event_id: '', audio_end_ms: c.audioMs, item_id: itemId });
    commit(this.ctx, c, itemId, transcript);
  }

  /** End an open connection now the way OpenAI does at its session cap (error, then close 1001). */
  expireSession(index = 0, limitMs = 60_000): void {
    const c = [...this.live].find((x) => x.rec.index === index);
    if (!c) throw new Error(`no open connection ${index}`);
    this.expire(c, limitMs);
  }

  /** All caller audio a connection received, decoded. */
  callerAudio(index = 0): Int16Array {
    return concat(this.connections[index]?.callerChunks ?? []);
  }

  /** Received client events of one type on a connection. */
  receivedOf<T extends ClientEventType>(type: T, index = 0): ClientEventOf<T>[] {
    return (this.connections[index]?.received ?? [])
      .filter((r) => r.type === type)
      .map((r) => r.event as ClientEventOf<T>);
  }

  // ---- connection ---------------------------------------------------------------------------

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const index = this.attempts++;
    const auth = req.headers.authorization;
    const refuse = (status: number, message: string) => {
      const body = JSON.stringify({ error: { type: 'invalid_request_error', code: null, message } });
      const reason = status === 401 ? 'Unauthorized' : status === 429 ? 'Too Many Requests' : 'Error';
      socket.end(
        `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (this.opts.rejectWith && index >= (this.opts.rejectFrom ?? 0)) {
      const s = this.opts.rejectWith;
      return refuse(
        s,
        s === 401
          ? 'Incorrect API key provided.'
          : s === 429
            ? 'Rate limit reached for requests.'
            : 'The server is temporarily unavailable.',
      );
    }
    if (!auth?.startsWith('Bearer ') || auth.length < 10) return refuse(401, 'Missing bearer authentication.');
    this.wss!.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req, auth));
  }

  private accept(ws: WebSocket, req: IncomingMessage, auth: string): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const session: SessionConfig = {
      type: 'realtime',
      model: url.searchParams.get('model') ?? 'gpt-realtime',
      instructions: 'default instructions',
      output_modalities: ['audio'],
      audio: {
        input: {
          format: { type: 'audio/pcm', rate: 24000 },
          turn_detection: {
            type: 'server_vad',
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            create_response: true,
            interrupt_response: true,
          },
        },
        output: { format: { type: 'audio/pcm', rate: 24000 }, voice: 'marin' },
      },
      tools: [],
      tool_choice: 'auto',
    };
    const rec: ConnectionRecord = {
      index: this.connections.length,
      model: url.searchParams.get('model'),
      callId: url.searchParams.get('call_id'),
      authorization: auth,
      received: [],
      sent: [],
      session,
      appendSizes: [],
      callerChunks: [],
      turns: 0,
      answers: [],
      truncates: [],
      toolOutputs: [],
      seededItems: [],
      errorsSent: [],
      closed: false,
      closedByServer: undefined,
    };
    this.connections.push(rec);
    const c: Conn = {
      rec,
      ws,
      vad: makeVad(this.ctx, session),
      pending: new Int16Array(0),
      audioMs: 0,
      speechItem: undefined,
      utterance: [],
      preRoll: [],
      playback: undefined,
      uncommittedMs: 0,
      lastItemId: null,
      active: undefined,
      audioItems: new Map(),
      callIds: new Set(),
      timers: new Set(),
    };
    this.live.add(c);
    ws.on('message', (data, isBinary) => onMessage(this.ctx, c, data.toString(), isBinary));
    ws.on('close', () => {
      rec.closed = true;
      this.cleanup(c);
      this.live.delete(c);
    });
    ws.on('error', () => {});
    this.send(c, { type: 'session.created', event_id: '', session: session as RealtimeSessionCreateRequest });
    if (this.opts.dropAfterMs !== undefined && rec.index < this.opts.dropConnections) {
      this.later(c, this.opts.dropAfterMs, () => ws.terminate());
    }
    const limit = this.opts.sessionLimitMs;
    if (limit !== undefined) this.later(c, limit, () => this.expire(c, limit));
  }

  /** The session hit its length cap: an error event, then a clean close (no answer is finished). */
  private expire(c: Conn, limitMs: number): void {
    const message = `Your session hit the maximum duration of ${+(limitMs / 60_000).toFixed(2)} minutes.`;
    this.sendError(c, 'session_expired', message);
    c.rec.closedByServer = 1001;
    this.cleanup(c);
    c.ws.close(1001, message);
  }

  private later(c: Conn, ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      c.timers.delete(t);
      fn();
    }, ms);
    c.timers.add(t);
    return t;
  }

  private cleanup(c: Conn): void {
    for (const t of c.timers) clearTimeout(t);
    c.timers.clear();
    if (c.active?.timer) clearTimeout(c.active.timer);
    c.active = undefined;
    if (c.playback?.stopTimer) clearTimeout(c.playback.stopTimer);
    c.playback = undefined;
  }

  private send(c: Conn, ev: RealtimeServerEvent): void {
    if (c.ws.readyState !== c.ws.OPEN) return;
    const withId = 'event_id' in ev ? { ...ev, event_id: `event_${++this.eventSeq}` } : ev;
    c.rec.sent.push({ type: ev.type, at: performance.now() });
    c.ws.send(JSON.stringify(withId));
    this.onSent?.(c.rec.index, ev.type);
  }

  private sendError(c: Conn, code: string, message: string, clientEventId?: string): void {
    c.rec.errorsSent.push({ code, message });
    this.send(c, {
      type: 'error',
      event_id: '',
      error: { type: 'invalid_request_error', code, message, event_id: clientEventId ?? null, param: null },
    });
  }

  private violation(c: Conn, what: string, clientEventId?: string): void {
    this.violations.push(`conn ${c.rec.index}: ${what}`);
    this.sendError(c, 'invalid_event', what, clientEventId);
  }
}
