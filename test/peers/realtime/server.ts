import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type {
  ConversationItem,
  RealtimeServerEvent,
  RealtimeSessionCreateRequest,
} from 'openai/resources/realtime/realtime';
import { WebSocketServer, type WebSocket } from 'ws';
import { createCodec, type FrameCodec } from '../../../src/core/audio/codecs.js';
import { type AudioFormat, l16, PCMA_8K, PCMU_8K } from '../../../src/core/audio/format.js';
import { pcmBuffer, pcmView } from '../../../src/core/audio/level.js';
import { EnergyVad } from '../../../src/core/audio/vad.js';
import { concat, dominantFrequency, tone } from '../../support/audio.js';
import { type ClientEventOf, clientEventSchemas, type ClientEventType, type SessionConfig } from './schemas.js';
import { seededRandom, sendTimes, splitAudio, type StreamShape } from './stream.js';

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
 */

export interface ScriptedToolCall {
  name: string;
  arguments: Record<string, unknown>;
  /** Speak (a tone) before calling the tool, e.g. a goodbye before end_call. */
  audioFirst?: boolean;
}

export interface RealtimeTestServerOptions {
  /** Refuse the WebSocket upgrade with this HTTP status (401, 429, 503 ...). */
  rejectWith?: number;
  /** First connection index (0-based) that is refused; default 0 (all). */
  rejectFrom?: number;
  /** Drop (TCP reset, no close frame) a connection this long after it opens. */
  dropAfterMs?: number;
  /** Drop a connection when its caller turn N ends, instead of answering. */
  dropOnTurn?: number;
  /** How many connections (from the first) the drop options apply to; default 1. */
  dropConnections?: number;
  /** Scripted function calls, keyed by caller turn number on a connection. */
  toolCalls?: Record<number, ScriptedToolCall>;
  /** Length of each answer tone; default 1500 ms. */
  toneMs?: number;
  /** How much faster than real time audio is sent; default 8. */
  speedup?: number;
  /** Audio per `response.output_audio.delta`; default 100 ms (with `chunks: 'fixed'`). */
  chunkMs?: number;
  /** Delta sizes: `fixed` (default, chunkMs each) or `irregular` (odd byte counts, 10-150 ms). */
  chunks?: StreamShape['chunks'];
  /** `bursts` (default: 3 deltas at a time, `speedup` ahead) or `steady` (each delta when generated). */
  pace?: StreamShape['pace'];
  /** Seed of the irregular sizes. */
  seed?: number;
  /** Speech must last this long before speech_started (server VAD latency); default 200 ms. */
  vadStartMs?: number;
  /**
   * Session length cap: after this long a connection gets `error` session_expired, then a clean
   * WebSocket close 1001 with the same message (as OpenAI does at its session limit).
   */
  sessionLimitMs?: number;
  /** Energy VAD threshold on the caller audio; default -40 dBFS. */
  vadThresholdDbfs?: number;
  /**
   * Fail responses the way OpenAI does on quota, rate limit or the content filter: response.created
   * then at once response.done with this status and details, and no audio. `count` (default all)
   * limits it to the first N responses on each connection.
   */
  failResponses?: {
    status: 'failed' | 'incomplete';
    /** failed: status_details.error.code (e.g. rate_limit_exceeded, insufficient_quota). */
    code?: string;
    /** incomplete: status_details.reason (content_filter, max_output_tokens). */
    reason?: 'content_filter' | 'max_output_tokens';
    count?: number;
  };
}

export interface ReceivedEvent {
  type: string;
  at: number;
  /** The event as received, with `audio` payloads replaced by their byte length. */
  event: Record<string, unknown>;
}

export interface AnswerRecord {
  responseId: string;
  itemId: string | undefined;
  freq: number;
  /** Audio sent for the item so far, ms. */
  audioMs: number;
  /** Byte length of each audio delta (generated, on a sideband), in order. */
  deltaBytes: number[];
  firstDeltaAt: number | undefined;
  lastDeltaAt: number | undefined;
  status: 'in_progress' | 'completed' | 'cancelled' | 'failed' | 'incomplete';
  instructions: string | undefined;
  toolCallId: string | undefined;
}

export interface ConnectionRecord {
  index: number;
  model: string | null;
  /**
   * `call_id` of a SIP call's sideband (`?call_id=`), else null. A sideband connection carries no
   * audio: answers send their events and transcripts but no audio deltas (the audio is on SIP).
   */
  callId: string | null;
  authorization: string | undefined;
  received: ReceivedEvent[];
  sent: { type: string; at: number }[];
  session: SessionConfig;
  /** Byte length of each input_audio_buffer.append. */
  appendSizes: number[];
  /** Caller audio decoded to PCM at the session's rate (8 kHz for G.711, 24 kHz for audio/pcm). */
  callerChunks: Int16Array[];
  turns: number;
  answers: AnswerRecord[];
  truncates: ClientEventOf<'conversation.item.truncate'>[];
  toolOutputs: { call_id: string; output: string }[];
  seededItems: ClientEventOf<'conversation.item.create'>['item'][];
  errorsSent: { code: string; message: string }[];
  closed: boolean;
  /** Close code, when this server closed the socket cleanly (1001 at the session limit). */
  closedByServer: number | undefined;
}

interface ActiveResponse {
  answer: AnswerRecord;
  timer: NodeJS.Timeout | undefined;
  finish: (status: 'completed' | 'cancelled', reason?: 'turn_detected' | 'client_cancelled') => void;
}

interface Conn {
  rec: ConnectionRecord;
  ws: WebSocket;
  vad: EnergyVad;
  pending: Int16Array;
  audioMs: number;
  speechItem: string | undefined;
  utterance: Int16Array[];
  /** Frames before speech_started, included in the utterance (prefix padding). */
  preRoll: Int16Array[];
  /** Sideband only: OpenAI is playing an answer on the SIP leg (output_audio_buffer.* state). */
  playback: { responseId: string; stopTimer: NodeJS.Timeout | undefined } | undefined;
  uncommittedMs: number;
  lastItemId: string | null;
  active: ActiveResponse | undefined;
  /** Assistant audio items and how much audio each carried (what truncate may cut). */
  audioItems: Map<string, number>;
  callIds: Set<string>;
  timers: Set<NodeJS.Timeout>;
}

const id = (prefix: string) => `${prefix}_${randomBytes(8).toString('hex')}`;

/** Frames of caller audio before speech_started that still belong to the utterance (~prefix_padding_ms). */
const PRE_ROLL_FRAMES = 15;

/** A transcript as the deltas the service streams it in (words, each but the first with its space). */
const words = (text: string): string[] => text.split(/(?= )/).filter((w) => w.length > 0);

/** The whole answer in the session's output format (G.711 frame by frame; PCM16 little-endian). */
function encodeAll(pcm: Int16Array, format: AudioFormat): Buffer {
  if (format.codec === 'l16') return Buffer.from(pcmBuffer(pcm));
  const enc: FrameCodec = createCodec(format);
  const parts: Buffer[] = [];
  for (let j = 0; j < pcm.length; j += 160) {
    const f = new Int16Array(160);
    f.set(pcm.subarray(j, Math.min(j + 160, pcm.length)));
    parts.push(enc.encode(f));
  }
  return Buffer.concat(parts);
}

function formatOf(session: SessionConfig): { type: 'audio/pcm' | 'audio/pcmu' | 'audio/pcma'; audio: AudioFormat } {
  const t = session.audio?.input?.format?.type ?? 'audio/pcm';
  if (t === 'audio/pcmu') return { type: t, audio: PCMU_8K };
  if (t === 'audio/pcma') return { type: t, audio: PCMA_8K };
  return { type: 'audio/pcm', audio: l16(24000) };
}

function outputFormatOf(session: SessionConfig): AudioFormat {
  const t = session.audio?.output?.format?.type ?? 'audio/pcm';
  return t === 'audio/pcmu' ? PCMU_8K : t === 'audio/pcma' ? PCMA_8K : l16(24000);
}

function stripAudio(ev: Record<string, unknown>): Record<string, unknown> {
  if (typeof ev.audio === 'string') return { ...ev, audio: `<${Buffer.from(ev.audio, 'base64').length} bytes>` };
  return ev;
}

export class RealtimeTestServer {
  readonly connections: ConnectionRecord[] = [];
  /** Every client event that was not valid protocol; a conforming client leaves this empty. */
  readonly violations: string[] = [];
  /** Called as each server event is sent (after it is written), for tests that act on one. */
  onSent: ((connection: number, type: string) => void) | undefined;
  private readonly opts: Required<
    Pick<
      RealtimeTestServerOptions,
      'toneMs' | 'speedup' | 'chunkMs' | 'vadThresholdDbfs' | 'dropConnections' | 'vadStartMs'
    >
  > &
    RealtimeTestServerOptions;
  private http: Server | undefined;
  private wss: WebSocketServer | undefined;
  private readonly live = new Set<Conn>();
  private eventSeq = 0;
  private attempts = 0;
  private readonly playbackStartAt = new WeakMap<Conn, number>();

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
    this.speechStarted(c, true);
    const itemId = c.speechItem!;
    this.send(c, { type: 'input_audio_buffer.speech_stopped', event_id: '', audio_end_ms: c.audioMs, item_id: itemId });
    this.commit(c, itemId, transcript);
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
      vad: this.makeVad(session),
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
    ws.on('message', (data, isBinary) => this.onMessage(c, data.toString(), isBinary));
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

  private makeVad(session: SessionConfig): EnergyVad {
    const td = session.audio?.input?.turn_detection;
    const silenceMs = td && td.type === 'server_vad' ? (td.silence_duration_ms ?? 500) : 500;
    return new EnergyVad({ thresholdDbfs: this.opts.vadThresholdDbfs, minSpeechMs: this.opts.vadStartMs, silenceMs });
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

  // ---- client events ------------------------------------------------------------------------

  private onMessage(c: Conn, text: string, isBinary: boolean): void {
    if (isBinary) return this.violation(c, 'binary frame (the API takes JSON text frames)');
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return this.violation(c, `not JSON: ${text.slice(0, 80)}`);
    }
    const type = (raw as { type?: unknown } | null)?.type;
    if (typeof type !== 'string' || !(type in clientEventSchemas)) {
      return this.violation(c, `unknown client event type ${JSON.stringify(type)}`);
    }
    const schema = clientEventSchemas[type as ClientEventType];
    const parsed = schema.safeParse(raw);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
      return this.violation(c, `${type}: ${issues}`, (raw as { event_id?: string }).event_id);
    }
    c.rec.received.push({ type, at: performance.now(), event: stripAudio(parsed.data as Record<string, unknown>) });
    try {
      this.dispatch(c, type as ClientEventType, parsed.data);
    } catch (err) {
      this.violation(c, `${type}: ${(err as Error).message}`);
    }
  }

  private dispatch(c: Conn, type: ClientEventType, ev: unknown): void {
    switch (type) {
      case 'session.update':
        return this.onSessionUpdate(c, ev as ClientEventOf<'session.update'>);
      case 'input_audio_buffer.append':
        return this.onAppend(c, ev as ClientEventOf<'input_audio_buffer.append'>);
      case 'input_audio_buffer.commit':
        if (c.uncommittedMs < 100) return this.sendError(c, 'input_audio_buffer_commit_empty', 'buffer too small');
        return this.commit(c, c.speechItem ?? id('item'));
      case 'input_audio_buffer.clear':
        c.uncommittedMs = 0;
        c.utterance = [];
        return this.send(c, { type: 'input_audio_buffer.cleared', event_id: '' });
      case 'conversation.item.create':
        return this.onItemCreate(c, ev as ClientEventOf<'conversation.item.create'>);
      case 'conversation.item.truncate':
        return this.onTruncate(c, ev as ClientEventOf<'conversation.item.truncate'>);
      case 'conversation.item.delete': {
        const e = ev as ClientEventOf<'conversation.item.delete'>;
        return this.send(c, { type: 'conversation.item.deleted', event_id: '', item_id: e.item_id });
      }
      case 'conversation.item.retrieve':
        return this.sendError(c, 'not_supported', 'conversation.item.retrieve is not simulated');
      case 'response.create': {
        const e = ev as ClientEventOf<'response.create'>;
        if (c.active) {
          return this.sendError(
            c,
            'conversation_already_has_active_response',
            'Conversation already has an active response in progress',
            e.event_id,
          );
        }
        return this.respond(c, undefined, e.response?.instructions);
      }
      case 'response.cancel': {
        const e = ev as ClientEventOf<'response.cancel'>;
        if (!c.active || (e.response_id && e.response_id !== c.active.answer.responseId)) {
          return this.sendError(c, 'response_cancel_not_active', 'Cancellation failed: no active response found');
        }
        return c.active.finish('cancelled', 'client_cancelled');
      }
    }
  }

  private onSessionUpdate(c: Conn, ev: ClientEventOf<'session.update'>): void {
    const s = ev.session;
    const prev = c.rec.session;
    const hadAudio = c.rec.answers.some((a) => a.audioMs > 0);
    if (hadAudio && s.audio?.output?.voice && s.audio.output.voice !== prev.audio?.output?.voice) {
      return this.sendError(c, 'cannot_update_voice', 'Cannot update a conversation voice once audio has been sent');
    }
    if (s.model && prev.model && c.rec.model && s.model !== c.rec.model) {
      return this.sendError(c, 'cannot_update_model', 'The session model cannot be changed');
    }
    c.rec.session = {
      ...prev,
      ...s,
      audio: {
        input: { ...prev.audio?.input, ...s.audio?.input },
        output: { ...prev.audio?.output, ...s.audio?.output },
      },
    };
    c.vad = this.makeVad(c.rec.session);
    this.send(c, {
      type: 'session.updated',
      event_id: '',
      session: c.rec.session as RealtimeSessionCreateRequest,
    });
  }

  private onAppend(c: Conn, ev: ClientEventOf<'input_audio_buffer.append'>): void {
    const bytes = Buffer.from(ev.audio, 'base64');
    c.rec.appendSizes.push(bytes.length);
    const fmt = formatOf(c.rec.session);
    if (fmt.type === 'audio/pcm' && bytes.length % 2 !== 0) {
      return this.violation(c, 'audio/pcm append with an odd number of bytes');
    }
    let pcm: Int16Array;
    if (fmt.type === 'audio/pcm') pcm = pcmView(Buffer.from(bytes));
    else {
      const codec: FrameCodec = createCodec(fmt.audio);
      // G.711 decodes byte by byte; decode any length in 160-byte steps.
      const parts: Int16Array[] = [];
      for (let i = 0; i < bytes.length; i += 160) {
        const chunk = Buffer.alloc(160, fmt.type === 'audio/pcmu' ? 0xff : 0xd5);
        bytes.copy(chunk, 0, i, Math.min(i + 160, bytes.length));
        parts.push(codec.decode(chunk).slice(0, Math.min(160, bytes.length - i)));
      }
      pcm = concat(parts);
    }
    c.rec.callerChunks.push(pcm);
    this.runVad(c, pcm, fmt.audio.sampleRate);
  }

  private runVad(c: Conn, pcm: Int16Array, rate: number): void {
    const frame = rate / 50;
    const all = concat([c.pending, pcm]);
    let off = 0;
    for (; off + frame <= all.length; off += frame) {
      const f = all.subarray(off, off + frame);
      c.audioMs += 20;
      c.uncommittedMs += 20;
      const td = c.rec.session.audio?.input?.turn_detection;
      if (!td) {
        c.utterance.push(f.slice()); // manual turns: the client commits (and is answered on response.create)
        continue;
      }
      const ev = c.vad.process(f);
      if (ev === 'start') this.speechStarted(c, td.interrupt_response !== false);
      if (c.vad.speaking || ev === 'stop') c.utterance.push(f.slice());
      else {
        c.preRoll.push(f.slice());
        if (c.preRoll.length > PRE_ROLL_FRAMES) c.preRoll.shift();
      }
      if (ev === 'stop') {
        const itemId = c.speechItem ?? id('item');
        this.send(c, {
          type: 'input_audio_buffer.speech_stopped',
          event_id: '',
          audio_end_ms: c.audioMs,
          item_id: itemId,
        });
        this.commit(c, itemId);
        if (c.ws.readyState !== c.ws.OPEN) return;
      }
    }
    c.pending = all.slice(off);
  }

  private speechStarted(c: Conn, interrupt: boolean): void {
    c.speechItem = id('item');
    c.utterance = c.preRoll;
    c.preRoll = [];
    this.send(c, {
      type: 'input_audio_buffer.speech_started',
      event_id: '',
      audio_start_ms: Math.max(0, c.audioMs - this.opts.vadStartMs),
      item_id: c.speechItem,
    });
    if (!interrupt) return;
    if (c.active) c.active.finish('cancelled', 'turn_detected');
    this.playbackCleared(c);
  }

  /** Sideband: the caller interrupted OpenAI's playout on the SIP leg. */
  private playbackCleared(c: Conn): void {
    const p = c.playback;
    if (!p) return;
    if (p.stopTimer) clearTimeout(p.stopTimer);
    c.playback = undefined;
    this.send(c, { type: 'output_audio_buffer.cleared', event_id: '', response_id: p.responseId });
  }

  /** Caller turn complete: commit, transcribe ("tone N Hz"), answer (or misbehave as scripted). */
  private commit(c: Conn, itemId: string, said?: string): void {
    const utterance = concat(c.utterance);
    c.utterance = [];
    c.speechItem = undefined;
    c.uncommittedMs = 0;
    const turn = ++c.rec.turns;
    this.send(c, {
      type: 'input_audio_buffer.committed',
      event_id: '',
      item_id: itemId,
      previous_item_id: c.lastItemId,
    });
    const item: ConversationItem = {
      id: itemId,
      object: 'realtime.item',
      type: 'message',
      role: 'user',
      status: 'completed',
      content: [{ type: 'input_audio' }],
    };
    this.send(c, { type: 'conversation.item.added', event_id: '', item, previous_item_id: c.lastItemId });
    this.send(c, { type: 'conversation.item.done', event_id: '', item, previous_item_id: c.lastItemId });
    c.lastItemId = itemId;
    if (this.opts.dropOnTurn === turn && c.rec.index < this.opts.dropConnections) {
      c.ws.terminate();
      return;
    }
    const rate = formatOf(c.rec.session).audio.sampleRate;
    if (c.rec.session.audio?.input?.transcription) {
      const freq = utterance.length >= 256 ? Math.round(dominantFrequency(utterance, rate)) : 0;
      const text = said ?? `tone ${freq} Hz`;
      for (const delta of words(text)) {
        this.send(c, {
          type: 'conversation.item.input_audio_transcription.delta',
          event_id: '',
          item_id: itemId,
          content_index: 0,
          delta,
        });
      }
      this.send(c, {
        type: 'conversation.item.input_audio_transcription.completed',
        event_id: '',
        item_id: itemId,
        content_index: 0,
        transcript: text,
        usage: { type: 'duration', seconds: utterance.length / rate },
      });
    }
    const td = c.rec.session.audio?.input?.turn_detection;
    if (td && td.create_response !== false && !c.active) this.respond(c, this.opts.toolCalls?.[turn]);
  }

  private onItemCreate(c: Conn, ev: ClientEventOf<'conversation.item.create'>): void {
    const item = ev.item;
    if (item.type === 'function_call_output') {
      if (!c.callIds.has(item.call_id)) {
        return this.sendError(c, 'invalid_call_id', `no function call with call_id ${item.call_id}`, ev.event_id);
      }
      c.rec.toolOutputs.push({ call_id: item.call_id, output: item.output });
    } else {
      c.rec.seededItems.push(item);
    }
    const full = {
      ...item,
      id: item.id ?? id('item'),
      object: 'realtime.item',
      status: 'completed',
    } as ConversationItem;
    this.send(c, { type: 'conversation.item.added', event_id: '', item: full, previous_item_id: c.lastItemId });
    this.send(c, { type: 'conversation.item.done', event_id: '', item: full, previous_item_id: c.lastItemId });
    c.lastItemId = full.id!;
  }

  private onTruncate(c: Conn, ev: ClientEventOf<'conversation.item.truncate'>): void {
    const sentMs = c.audioItems.get(ev.item_id);
    if (sentMs === undefined) {
      return this.sendError(c, 'item_not_found', `no assistant audio item ${ev.item_id}`, ev.event_id);
    }
    if (ev.audio_end_ms > sentMs) {
      return this.sendError(
        c,
        'invalid_value',
        `audio_end_ms ${ev.audio_end_ms} is beyond the item's ${sentMs} ms of audio`,
        ev.event_id,
      );
    }
    c.rec.truncates.push(ev);
    this.send(c, {
      type: 'conversation.item.truncated',
      event_id: '',
      item_id: ev.item_id,
      content_index: 0,
      audio_end_ms: ev.audio_end_ms,
    });
  }

  // ---- responses ----------------------------------------------------------------------------

  /** A response that ends at once as failed/incomplete, with no audio (quota, rate limit, filter). */
  private failResponse(
    c: Conn,
    answer: AnswerRecord,
    fail: NonNullable<RealtimeTestServerOptions['failResponses']>,
  ): void {
    answer.status = fail.status;
    const response = {
      id: answer.responseId,
      object: 'realtime.response' as const,
      output: [],
      output_modalities: ['audio' as const],
    };
    this.send(c, { type: 'response.created', event_id: '', response: { ...response, status: 'in_progress' } });
    const status_details =
      fail.status === 'failed'
        ? {
            type: 'failed' as const,
            error: { type: 'invalid_request_error', code: fail.code ?? 'rate_limit_exceeded' },
          }
        : { type: 'incomplete' as const, reason: fail.reason ?? 'content_filter' };
    this.later(c, 20, () =>
      this.send(c, {
        type: 'response.done',
        event_id: '',
        response: { ...response, status: fail.status, status_details },
      }),
    );
  }

  /** One response: a tone (unless the script calls a tool straight away), then the scripted tool call. */
  private respond(c: Conn, tool: ScriptedToolCall | undefined, instructions?: string): void {
    const n = c.rec.answers.length + 1;
    const freq = 400 + 200 * n;
    const responseId = id('resp');
    const withAudio = !tool || tool.audioFirst === true;
    const itemId = withAudio ? id('item') : undefined;
    const answer: AnswerRecord = {
      responseId,
      itemId,
      freq,
      audioMs: 0,
      deltaBytes: [],
      firstDeltaAt: undefined,
      lastDeltaAt: undefined,
      status: 'in_progress',
      instructions,
      toolCallId: undefined,
    };
    c.rec.answers.push(answer);
    const fail = this.opts.failResponses;
    if (fail && (fail.count === undefined || c.rec.answers.length <= fail.count))
      return this.failResponse(c, answer, fail);
    const output: ConversationItem[] = [];
    const transcript = instructions ?? `turn ${n} tone ${freq} Hz`;
    this.send(c, {
      type: 'response.created',
      event_id: '',
      response: {
        id: responseId,
        object: 'realtime.response',
        status: 'in_progress',
        output: [],
        output_modalities: ['audio'],
      },
    });
    this.sendRateLimits(c);

    const format = outputFormatOf(c.rec.session);
    const bytesPerMs = format.codec === 'l16' ? 48 : 8;
    const shape: StreamShape = {
      chunks: this.opts.chunks ?? 'fixed',
      pace: this.opts.pace ?? 'bursts',
      speedup: this.opts.speedup,
      chunkMs: this.opts.chunkMs,
      seed: this.opts.seed ?? 1,
    };
    let chunks: Buffer[] = [];
    if (withAudio) {
      chunks = splitAudio(
        encodeAll(tone(freq, format.sampleRate, this.opts.toneMs, 8000), format),
        bytesPerMs,
        shape,
        seededRandom(shape.seed + n),
      );
      const item: ConversationItem = {
        id: itemId,
        object: 'realtime.item',
        type: 'message',
        role: 'assistant',
        status: 'in_progress',
        content: [],
      };
      this.send(c, {
        type: 'response.output_item.added',
        event_id: '',
        response_id: responseId,
        output_index: 0,
        item,
      });
      this.send(c, { type: 'conversation.item.added', event_id: '', item, previous_item_id: c.lastItemId });
      c.lastItemId = itemId!;
      c.audioItems.set(itemId!, 0);
      this.send(c, {
        type: 'response.content_part.added',
        event_id: '',
        response_id: responseId,
        item_id: itemId!,
        output_index: 0,
        content_index: 0,
        part: { type: 'audio', transcript: '' },
      });
    }

    const closeAudio = (status: 'completed' | 'cancelled') => {
      if (!withAudio) return;
      const said = status === 'completed' ? transcript : transcript.slice(0, 8);
      const common = { event_id: '', response_id: responseId, item_id: itemId!, output_index: 0, content_index: 0 };
      this.send(c, { type: 'response.output_audio.done', ...common });
      this.send(c, { type: 'response.output_audio_transcript.done', ...common, transcript: said });
      this.send(c, { type: 'response.content_part.done', ...common, part: { type: 'audio', transcript: said } });
      const done: ConversationItem = {
        id: itemId,
        object: 'realtime.item',
        type: 'message',
        role: 'assistant',
        status: status === 'completed' ? 'completed' : 'incomplete',
        content: [{ type: 'output_audio', transcript: said }],
      };
      output.push(done);
      this.send(c, {
        type: 'response.output_item.done',
        event_id: '',
        response_id: responseId,
        output_index: 0,
        item: done,
      });
      this.send(c, { type: 'conversation.item.done', event_id: '', item: done });
    };
    const callTool = () => {
      if (!tool) return;
      const callId = id('call');
      const fcItem = id('item');
      const args = JSON.stringify(tool.arguments);
      const outputIndex = withAudio ? 1 : 0;
      c.callIds.add(callId);
      answer.toolCallId = callId;
      const pending: ConversationItem = {
        id: fcItem,
        object: 'realtime.item',
        type: 'function_call',
        status: 'in_progress',
        name: tool.name,
        call_id: callId,
        arguments: '',
      };
      this.send(c, {
        type: 'response.output_item.added',
        event_id: '',
        response_id: responseId,
        output_index: outputIndex,
        item: pending,
      });
      this.send(c, { type: 'conversation.item.added', event_id: '', item: pending, previous_item_id: c.lastItemId });
      c.lastItemId = fcItem;
      const common = {
        event_id: '',
        response_id: responseId,
        item_id: fcItem,
        output_index: outputIndex,
        call_id: callId,
      };
      this.send(c, { type: 'response.function_call_arguments.delta', ...common, delta: args });
      this.send(c, { type: 'response.function_call_arguments.done', ...common, name: tool.name, arguments: args });
      const done: ConversationItem = { ...pending, status: 'completed', arguments: args };
      output.push(done);
      this.send(c, {
        type: 'response.output_item.done',
        event_id: '',
        response_id: responseId,
        output_index: outputIndex,
        item: done,
      });
      this.send(c, { type: 'conversation.item.done', event_id: '', item: done });
    };

    let next = 0;
    const active: ActiveResponse = {
      answer,
      timer: undefined,
      finish: (status, reason) => {
        if (c.active !== active) return;
        if (active.timer) clearTimeout(active.timer);
        c.active = undefined;
        sendTranscript(words(transcript).length);
        closeAudio(status);
        if (status === 'completed') callTool();
        answer.status = status;
        this.send(c, {
          type: 'response.done',
          event_id: '',
          response: {
            id: responseId,
            object: 'realtime.response',
            status,
            ...(reason ? { status_details: { type: 'cancelled', reason } } : {}),
            output,
            output_modalities: ['audio'],
            usage: { total_tokens: 0, input_tokens: 0, output_tokens: 0 },
          },
        });
        this.playbackEnds(c, responseId, answer.audioMs);
      },
    };
    c.active = active;
    // The transcript streams alongside the audio: its words spread over the deltas.
    const said = words(transcript);
    let wordsSent = 0;
    const sendTranscript = (upTo: number) => {
      if (!withAudio) return;
      for (; wordsSent < Math.min(upTo, said.length); wordsSent++) {
        this.send(c, {
          type: 'response.output_audio_transcript.delta',
          event_id: '',
          response_id: responseId,
          item_id: itemId!,
          output_index: 0,
          content_index: 0,
          delta: said[wordsSent]!,
        });
      }
    };
    const due = sendTimes(
      chunks.map((b) => b.length),
      bytesPerMs,
      shape,
    );
    let startAt = 0;
    const pump = () => {
      active.timer = undefined;
      if (c.active !== active) return;
      const elapsed = performance.now() - startAt;
      for (; next < chunks.length && due[next]! <= elapsed + 1; next++) {
        const data = chunks[next]!;
        const now = performance.now();
        answer.firstDeltaAt ??= now;
        answer.lastDeltaAt = now;
        answer.audioMs += data.length / bytesPerMs;
        answer.deltaBytes.push(data.length);
        c.audioItems.set(itemId!, answer.audioMs);
        if (c.rec.callId !== null) {
          // A SIP call's audio goes over SIP, not the sideband: OpenAI reports its own playout.
          this.playbackStarts(c, responseId);
        } else {
          this.send(c, {
            type: 'response.output_audio.delta',
            event_id: '',
            response_id: responseId,
            item_id: itemId!,
            output_index: 0,
            content_index: 0,
            delta: data.toString('base64'),
          });
        }
        sendTranscript(Math.ceil(((next + 1) / chunks.length) * said.length));
      }
      if (next >= chunks.length) active.finish('completed');
      else active.timer = setTimeout(pump, Math.max(0, due[next]! - (performance.now() - startAt)));
    };
    // A little "thinking" time before the first audio, like the real service.
    active.timer = setTimeout(() => {
      startAt = performance.now();
      pump();
    }, 30);
  }

  private sendRateLimits(c: Conn): void {
    const n = c.rec.answers.length;
    this.send(c, {
      type: 'rate_limits.updated',
      event_id: '',
      rate_limits: [
        { name: 'requests', limit: 5000, remaining: 5000 - n, reset_seconds: 0.012 },
        { name: 'tokens', limit: 40_000, remaining: 40_000 - 300 * n, reset_seconds: 0.45 },
      ],
    });
  }

  /** Sideband: OpenAI starts playing an answer on the SIP leg, in real time. */
  private playbackStarts(c: Conn, responseId: string): void {
    if (c.playback?.responseId === responseId) return;
    this.playbackCleared(c);
    c.playback = { responseId, stopTimer: undefined };
    this.playbackStartAt.set(c, performance.now());
    this.send(c, { type: 'output_audio_buffer.started', event_id: '', response_id: responseId });
  }

  /** Sideband: the response is done; playout of its `audioMs` ends in real time after it started. */
  private playbackEnds(c: Conn, responseId: string, audioMs: number): void {
    const p = c.playback;
    if (p?.responseId !== responseId) return;
    const startedAt = this.playbackStartAt.get(c) ?? performance.now();
    const left = Math.max(0, startedAt + audioMs - performance.now());
    p.stopTimer = this.later(c, left, () => {
      if (c.playback !== p) return;
      c.playback = undefined;
      this.send(c, { type: 'output_audio_buffer.stopped', event_id: '', response_id: responseId });
    });
  }
}
