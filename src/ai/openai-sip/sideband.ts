import WebSocket from 'ws';
import type { OpenAiSipRouteConfig } from '../../config/schema.js';
import { GatewayError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import {
  describeRefusal,
  onUpgradeRefused,
  sayEvent,
  parseServerEvent,
  type RealtimeClientEvent,
  type RealtimeServerEvent,
  type RealtimeSessionCreateRequest,
  type ServerEventOf,
  TRANSCRIPTION_MODEL,
  userTextEvent,
} from '../realtime/protocol.js';
import { ToolRegistry } from '../realtime/tools.js';
import type { CallControl, ToolCallRecord, TranscriptEntry } from '../session.js';

/** Reconnects after an abnormal drop or a transient refusal; the SIP call runs on regardless. */
const MAX_RECONNECTS = 3;
const RECONNECT_DELAY_MS = 1000;
/** A peer that never answers our close frame must not keep a socket past the call. */
const CLOSE_GRACE_MS = 2000;

export type SidebandRouteConfig = Pick<
  OpenAiSipRouteConfig,
  'realtimeUrl' | 'apiKey' | 'connectTimeoutMs' | 'transcription' | 'tools' | 'transferTarget' | 'transfer'
>;

export interface SidebandOptions {
  route: SidebandRouteConfig;
  /** OpenAI's id for the SIP call (`rtc_…`, from realtime.call.incoming). */
  openAiCallId: string;
  /** Our call id, carried by errors. */
  callId: string;
  log: Logger;
  /**
   * What tools do to the call. transfer_call uses the front's own transfer (our REFER to the
   * carrier): a REFER from OpenAI (POST /refer) would land on us, the B2BUA in the middle, not on
   * the carrier. end_call's hangupAfterPlayout is the session's "let OpenAI finish speaking".
   */
  control: CallControl;
}

export type SidebandEvents = {
  transcript: [entry: TranscriptEntry];
  tool_call: [record: ToolCallRecord];
  /** OpenAI's server VAD heard the caller start speaking (it also cuts its own output then). */
  speech_started: [];
  /**
   * OpenAI's server VAD decided the caller's turn is over. `audioEndMs`: the event's audio_end_ms
   * (on OpenAI's input-audio timeline; it includes the VAD's trailing silence, `hangoverMs`).
   * `receivedAt`: performance.now() when the event reached us.
   */
  speech_stopped: [audioEndMs: unknown, hangoverMs: number, receivedAt: number];
  /** OpenAI started streaming a response's audio into the SIP call (output_audio_buffer.started). */
  output_started: [responseId: string | undefined];
};

/** OpenAI's server_vad default silence_duration_ms, until session.created/updated says otherwise. */
const DEFAULT_VAD_SILENCE_MS = 500;

/** `wss://…/v1/realtime?call_id=<id>`: the sideband of a SIP call names the call, not a model. */
export function sidebandUrl(base: string, openAiCallId: string): string {
  const u = new URL(base);
  u.searchParams.delete('model');
  u.searchParams.set('call_id', openAiCallId);
  return u.toString();
}

/**
 * The server-side control channel of one OpenAI SIP call: the same Realtime event protocol as the
 * WebSocket backend, minus audio (audio rides the SIP leg). It switches on transcription and offers
 * the route's tools (src/ai/realtime/tools.ts, shared with the WebSocket backend), relays
 * transcripts and tool calls, and answers tool calls. It never ends the call: if it cannot connect
 * or drops, the conversation carries on over SIP without transcripts or tools, and that is logged.
 */
export class OpenAiSideband extends TypedEmitter<SidebandEvents> {
  /** OpenAI is playing a response into the SIP call (output_audio_buffer.started … stopped/cleared). */
  speaking = false;
  private readonly tools: ToolRegistry;
  private readonly log: Logger;
  private readonly url: string;
  private readonly abort = new AbortController();
  private ws: WebSocket | undefined;
  private closed = false;
  private reconnects = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private configured = false;
  /** The response being generated (response.created … response.done): one at a time. */
  private responseId: string | undefined;
  private respondAfterDone = false;
  /** The route's first turn, asked for once the call is answered; sent when the socket is up. */
  private firstTurn: { event: RealtimeClientEvent; sent: boolean } | undefined;
  /** The session's VAD trailing silence, which audio_end_ms includes (from session.created/updated). */
  private vadSilenceMs = DEFAULT_VAD_SILENCE_MS;

  constructor(private readonly opts: SidebandOptions) {
    super();
    this.tools = new ToolRegistry(opts.route);
    this.url = sidebandUrl(opts.route.realtimeUrl, opts.openAiCallId);
    this.log = opts.log.child({ sideband: opts.openAiCallId });
  }

  /** Whether the socket is open now. */
  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  start(): void {
    this.connect();
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort(); // in-flight HTTP tools stop
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = undefined;
    if (ws?.readyState === WebSocket.OPEN) {
      ws.close(1000, 'call ended');
      const t = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
      t.unref();
      ws.once('close', () => clearTimeout(t));
    } else if (ws) {
      discard(ws);
    }
    this.log.info({ reason }, 'OpenAI sideband closed');
  }

  // ---- connection -------------------------------------------------------------------------

  private connect(): void {
    if (this.closed) return;
    const timeoutMs = this.opts.route.connectTimeoutMs;
    const ws = new WebSocket(this.url, {
      headers: { Authorization: `Bearer ${this.opts.route.apiKey}` },
      handshakeTimeout: timeoutMs,
    });
    this.ws = ws;
    let opened = false;
    let failed = false;
    // handshakeTimeout covers the upgrade; this also covers a DNS/TCP stall before it.
    const timer = setTimeout(() => fail(`no connection within ${timeoutMs} ms`), timeoutMs);
    const fail = (msg: string, status?: number) => {
      if (opened || failed) return;
      failed = true;
      clearTimeout(timer);
      discard(ws);
      if (this.ws === ws) this.ws = undefined;
      if (this.closed) return;
      // 4xx (bad key, unknown or finished call) will not get better by retrying; 408/429/5xx may.
      const permanent = status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429;
      const err = new GatewayError('ai_connect_failed', `OpenAI sideband: ${msg}`, this.opts.callId);
      this.log.error(
        { err: err.message, status },
        'OpenAI sideband unavailable; the call continues on SIP without transcripts or tools',
      );
      if (!permanent) this.retry();
    };

    onUpgradeRefused(ws, (status, body) => fail(describeRefusal(status, body), status));
    ws.on('open', () => {
      if (failed) return;
      opened = true;
      clearTimeout(timer);
      this.log.info({ reconnects: this.reconnects }, 'OpenAI sideband connected');
      this.configure();
      this.sendFirstTurn();
    });
    ws.on('message', (data: WebSocket.RawData) => {
      if (ws === this.ws) this.onMessage(data);
    });
    ws.on('error', (err) => {
      if (!opened) fail(`cannot reach ${new URL(this.url).host}: ${err.message}`);
      else this.log.warn({ err: err.message }, 'OpenAI sideband socket error');
    });
    ws.on('close', (code, reason) => {
      if (!opened) return fail(`socket closed before it opened (code ${code})`);
      if (ws === this.ws) this.onDropped(code, reason.toString());
    });
  }

  /** Tools and caller transcription; model, voice and instructions came with the accept. */
  private configure(): void {
    const session: RealtimeSessionCreateRequest = {
      type: 'realtime',
      tools: this.tools.definitions(),
      tool_choice: 'auto',
      ...(this.opts.route.transcription ? { audio: { input: { transcription: { model: TRANSCRIPTION_MODEL } } } } : {}),
    };
    this.send({ type: 'session.update', session });
  }

  private onDropped(code: number, reason: string): void {
    this.ws = undefined;
    this.speaking = false;
    this.responseId = undefined;
    this.respondAfterDone = false;
    if (this.closed) return;
    if (code === 1000) {
      // OpenAI closed it on purpose (the call is ending on its side): nothing to come back to.
      this.log.info({ code, reason }, 'OpenAI closed the sideband');
      return;
    }
    this.log.warn({ code, reason }, 'OpenAI sideband dropped; the call continues on SIP');
    this.retry();
  }

  private retry(): void {
    if (this.closed) return;
    if (this.reconnects >= MAX_RECONNECTS) {
      this.log.error({ reconnects: this.reconnects }, 'OpenAI sideband: giving up; no transcripts or tools');
      return;
    }
    this.reconnects++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, RECONNECT_DELAY_MS * this.reconnects);
  }

  /**
   * The caller is connected: ask OpenAI for the route's first turn (a greeting, a fixed text), now
   * or as soon as the sideband is up. Sent once; a reconnect does not greet again.
   */
  requestFirstTurn(event: RealtimeClientEvent): void {
    if (this.firstTurn) return;
    this.firstTurn = { event, sent: false };
    this.sendFirstTurn();
  }

  private sendFirstTurn(): void {
    const ft = this.firstTurn;
    if (!ft || ft.sent || this.responseId) return;
    if (this.send(ft.event)) {
      ft.sent = true;
      this.log.info('first turn requested over the sideband');
    }
  }

  /** Operator "say" over the sideband; false when the sideband is not connected. */
  say(text: string): boolean {
    return this.send(sayEvent(text));
  }

  /** Caller keypad input as a user message, answered after any response in progress; false when not connected. */
  sendText(text: string): boolean {
    if (!this.send(userTextEvent(text))) return false;
    if (this.responseId) this.respondAfterDone = true;
    else this.send({ type: 'response.create' });
    return true;
  }

  private send(ev: RealtimeClientEvent): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(ev));
    return true;
  }

  // ---- server events ----------------------------------------------------------------------

  private onMessage(data: WebSocket.RawData): void {
    let ev: RealtimeServerEvent;
    try {
      ev = parseServerEvent(data.toString());
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'unreadable sideband event ignored');
      return;
    }
    try {
      this.handle(ev);
    } catch (err) {
      // A malformed event must not take anything down with it.
      this.log.warn({ type: ev.type, err: (err as Error).message }, 'sideband event could not be handled');
    }
  }

  private handle(ev: RealtimeServerEvent): void {
    switch (ev.type) {
      case 'session.created':
        return this.learnTurnDetection(ev.session);
      case 'session.updated':
        if (!this.configured) this.log.debug('OpenAI sideband session configured');
        this.configured = true;
        return this.learnTurnDetection(ev.session);
      case 'input_audio_buffer.speech_started':
        return void this.emit('speech_started');
      case 'input_audio_buffer.speech_stopped':
        return void this.emit('speech_stopped', ev.audio_end_ms, this.vadSilenceMs, performance.now());
      case 'conversation.item.input_audio_transcription.completed':
        return this.transcript('caller', ev.transcript, ev.item_id);
      case 'response.output_audio_transcript.done':
        return this.transcript('ai', ev.transcript, ev.item_id);
      case 'response.created':
        this.responseId = ev.response.id ?? `resp-${Date.now()}`;
        return;
      case 'response.done':
        this.responseId = undefined;
        if (this.respondAfterDone) {
          this.respondAfterDone = false;
          this.send({ type: 'response.create' });
        } else this.sendFirstTurn();
        return;
      case 'output_audio_buffer.started':
        this.speaking = true;
        this.emit('output_started', typeof ev.response_id === 'string' ? ev.response_id : undefined);
        return;
      case 'output_audio_buffer.stopped':
      case 'output_audio_buffer.cleared':
        this.speaking = false;
        return;
      case 'response.function_call_arguments.done':
        // Without these there is nothing valid to answer with.
        if (typeof ev.call_id !== 'string' || typeof ev.name !== 'string')
          throw new Error('function call without call_id/name');
        void this.runTool(ev);
        return;
      case 'error':
        return this.onServerError(ev);
      default:
        return; // item/rate-limit/delta events need no action here
    }
  }

  /**
   * audio_end_ms includes the VAD's trailing silence: server_vad says how long (silence_duration_ms);
   * semantic_vad has no fixed figure, so nothing is taken off (the AI's share then includes it).
   */
  private learnTurnDetection(session: unknown): void {
    const td = (session as { audio?: { input?: { turn_detection?: unknown } } } | undefined)?.audio?.input
      ?.turn_detection as { type?: unknown; silence_duration_ms?: unknown } | null | undefined;
    if (td === undefined) return;
    const ms = td?.type === 'server_vad' ? (td.silence_duration_ms ?? DEFAULT_VAD_SILENCE_MS) : 0;
    this.vadSilenceMs = typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 && ms <= 10_000 ? ms : 0;
  }

  private transcript(role: TranscriptEntry['role'], text: unknown, itemId: unknown): void {
    if (typeof text !== 'string') throw new Error('transcript is not a string');
    this.emit('transcript', { role, text, at: Date.now(), ...(typeof itemId === 'string' ? { itemId } : {}) });
  }

  private onServerError(ev: ServerEventOf<'error'>): void {
    const e = ev.error ?? { type: 'unknown', message: 'error event without details' };
    const info = { type: e.type, code: e.code, message: e.message, clientEvent: e.event_id };
    if (e.code === 'response_cancel_not_active') this.log.debug(info, 'sideband: nothing to cancel');
    else this.log.warn(info, 'OpenAI sideband error event');
  }

  private async runTool(ev: ServerEventOf<'response.function_call_arguments.done'>): Promise<void> {
    const { record, reply, result } = await this.tools.answer(ev, {
      callId: this.opts.callId,
      log: this.log,
      control: this.opts.control,
      signal: this.abort.signal,
    });
    if (this.closed) return;
    this.emit('tool_call', record);
    if (!this.send(reply)) this.log.warn({ tool: ev.name }, 'tool output not delivered: sideband is down');
    result.after?.();
    if (!result.respond) return;
    // Only one response at a time: if the model is still finishing this one, ask right after it.
    if (this.responseId) this.respondAfterDone = true;
    else this.send({ type: 'response.create' });
  }
}

/** Drop a socket we no longer want, whatever its state, without its late events reaching us. */
function discard(ws: WebSocket): void {
  ws.removeAllListeners();
  ws.on('error', () => {}); // a socket being torn down may still report
  ws.terminate();
}
