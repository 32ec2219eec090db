import WebSocket from 'ws';
import type { RealtimeRouteConfig } from '../../config/schema.js';
import { type AudioFormat, durationMs } from '../../core/audio/format.js';
import { spokenPrompt } from '../../core/audio/speech.js';
import { GatewayError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { PlayedMark } from '../../core/playout.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { AiSession, AiSessionEvents, AiSessionOptions, CallControl, TranscriptEntry } from '../session.js';
import { AppendClock } from './append-clock.js';
import { ManualTurns } from './manual-turns.js';
import { OutputItems } from './output-items.js';
import {
  firstTurnEvent,
  responseFailure,
  seedEvent,
  sayEvent,
  parseServerEvent,
  userTextEvent,
  realtimeUrl,
  sessionConfig,
  wireFormatFor,
  type RealtimeClientEvent,
  type RealtimeServerEvent,
  type ServerEventOf,
  type WireFormats,
} from './protocol.js';
import { ResponseTurns } from './response-turns.js';
import { closeRealtimeSocket, openRealtimeSocket, type PendingConnect } from './socket.js';
import { ToolRegistry } from './tools.js';
import { CallerAudioUplink } from './uplink.js';

/** Optional timing taps for the benchmark (never needed in production). */
export interface RealtimeHooks {
  /** The append carrying `frame` (the buffer passed to sendAudio) has been written to the socket. */
  appendWritten?(callId: string, frame: Buffer): void;
  /** A `response.output_audio.delta` arrived (before it is decoded and handed to the bridge). */
  deltaReceived?(callId: string, itemId: string, receivedAt: number): void;
}

/** A long call may outlive several server-side session caps; more drops than this means the service is sick. */
const MAX_RECONNECTS = 3;
/** Context handed to a re-established session, newest last. */
const MAX_SEED_CHARS = 8000;

export interface RealtimeStats {
  appends: number;
  droppedFrames: number;
  deltas: number;
  reconnects: number;
  errors: number;
  failedResponses: number;
}

/**
 * One call's conversation with OpenAI Realtime over a WebSocket (GA protocol). Caller audio goes up
 * as one `input_audio_buffer.append` per 20 ms frame; model audio comes back in bursts and the
 * bridge paces it. The session owns barge-in truncation, tools, and recovery from a dropped socket;
 * the socket and its connect attempt are in socket.ts, caller audio up in uplink.ts, one-response-
 * at-a-time in response-turns.ts, per-item audio for truncation in output-items.ts.
 */
export class RealtimeSession extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly inputFormat: AudioFormat;
  readonly outputFormat: AudioFormat;
  readonly stats: RealtimeStats = {
    appends: 0,
    droppedFrames: 0,
    deltas: 0,
    reconnects: 0,
    errors: 0,
    failedResponses: 0,
  };
  private readonly formats: WireFormats;
  private readonly tools: ToolRegistry;
  private readonly log: Logger;
  private readonly callId: string;
  private readonly control: CallControl;
  private readonly abort = new AbortController();
  private ws: WebSocket | undefined;
  private pending: PendingConnect | undefined;
  private ready = false;
  private closed = false;
  /** One response at a time: the current one, and what waits for it. */
  private readonly responses = new ResponseTurns((ev) => this.send(ev));
  /** Audio received per output item, for barge-in truncation. */
  private readonly outputItems = new OutputItems();
  private speechAt: number | undefined;
  private readonly transcript: TranscriptEntry[] = [];
  /** The gateway's own VAD, when the route turns server turn detection off. */
  private readonly manual: ManualTurns | undefined;
  /** startFirstTurn() was called; the first turn goes out as soon as the session is ready. */
  private firstTurnWanted = false;
  private firstTurnSent = false;
  /** Failed/incomplete responses in a row; reset by a completed one. */
  private failedInARow = 0;
  private giveUp = false;
  private readonly appendClock = new AppendClock();
  private readonly uplink: CallerAudioUplink;
  constructor(
    private readonly route: RealtimeRouteConfig,
    opts: AiSessionOptions,
    private readonly hooks: RealtimeHooks = {},
  ) {
    super();
    this.formats = wireFormatFor(opts.legFormat);
    this.inputFormat = this.formats.format;
    this.outputFormat = this.formats.format;
    this.tools = new ToolRegistry(route);
    this.callId = opts.callId;
    this.control = opts.control;
    this.log = opts.log.child({ ai: 'realtime', model: route.model });
    const written = hooks.appendWritten;
    this.uplink = new CallerAudioUplink(
      this.stats,
      this.appendClock,
      this.log,
      (ev, cb) => this.send(ev, cb),
      written ? (frame) => written(this.callId, frame) : undefined,
    );
    if (route.turnDetection === null) this.manual = new ManualTurns(this.inputFormat, route.gatewayVad);
  }

  async start(): Promise<void> {
    await this.connect(false);
    this.log.info({ format: this.formats.wire.type }, 'Realtime session ready');
    this.emit('ready');
  }

  // ---- connection -------------------------------------------------------------------------

  /** Open a socket and configure the session; resolves on `session.updated`. */
  private connect(reseed: boolean): Promise<void> {
    if (this.closed) return Promise.reject(new GatewayError('ai_connect_failed', 'call already ended', this.callId));
    const attempt = openRealtimeSocket({
      url: realtimeUrl(this.route),
      apiKey: this.route.apiKey,
      timeoutMs: this.route.connectTimeoutMs,
      callId: this.callId,
      onOpen: () => {
        this.send({
          type: 'session.update',
          session: sessionConfig(this.route, this.formats, this.tools.definitions()),
        });
        if (reseed) this.sendSeed();
      },
      onMessage: (data) => {
        if (attempt.ws === this.ws) this.onMessage(data);
      },
      onSettled: () => {
        this.pending = undefined;
      },
      onError: (err) => this.log.warn({ err: err.message }, 'Realtime socket error'),
      onClosed: (code, reason) => {
        if (attempt.ws === this.ws) void this.onDropped(code, reason);
      },
    });
    this.ws = attempt.ws;
    this.ready = false;
    this.appendClock.reset();
    this.pending = attempt.pending;
    return attempt.done;
  }

  /** Re-seed a fresh session with what was said so far, so the model can carry on. */
  private sendSeed(): void {
    if (this.transcript.length > 0) this.send(seedEvent(this.transcript, MAX_SEED_CHARS));
  }

  private async onDropped(code: number, reason: string): Promise<void> {
    if (this.closed) return;
    this.ready = false;
    this.log.warn({ code, reason }, 'Realtime socket dropped mid-call');
    // The response will never finish: release the bridge's hang-up-after-playout wait.
    const id = this.responses.dropped();
    if (id) this.emit('response_done', id);
    if (this.stats.reconnects >= MAX_RECONNECTS) {
      return this.unavailable(new GatewayError('upstream', `socket dropped ${MAX_RECONNECTS + 1} times`, this.callId));
    }
    this.stats.reconnects++;
    try {
      await this.connect(true);
      this.log.info({ attempt: this.stats.reconnects, seeded: this.transcript.length }, 'Realtime reconnected');
    } catch (err) {
      if (this.closed) return;
      this.log.error({ err: (err as Error).message }, 'Realtime reconnect failed');
      await this.unavailable(err as Error);
    }
  }

  /** The AI is gone for good: apologise with the local TTS and hang up once it has played. */
  private async unavailable(err: Error): Promise<void> {
    if (this.giveUp) return;
    this.giveUp = true;
    this.stats.errors++;
    this.emit('error', err);
    const text = this.route.apologyText;
    const audio = await spokenPrompt(text, this.outputFormat);
    if (this.closed) return;
    this.emit('response_started', 'apology');
    this.emit('audio', audio, 'apology');
    this.emit('transcript', { role: 'ai', text, at: Date.now(), itemId: 'apology' });
    this.emit('response_done', 'apology');
    this.control.hangupAfterPlayout('ai_unavailable');
  }

  private send(ev: RealtimeClientEvent, cb?: (err?: Error) => void): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(ev), cb);
    return true;
  }

  // ---- audio ------------------------------------------------------------------------------

  sendAudio(frame: Buffer): void {
    const ws = this.ws;
    if (!this.ready || !ws || ws.readyState !== WebSocket.OPEN || this.giveUp) {
      this.stats.droppedFrames++;
      return;
    }
    if (!this.manual) return this.uplink.append(ws, frame);
    const { append, event } = this.manual.push(frame);
    if (event === 'start') {
      this.speechAt = performance.now();
      this.emit('speech_started'); // barge-in: the bridge clears playout and calls playoutCleared()
    }
    for (const f of append) this.uplink.append(ws, f);
    if (event === 'stop') this.endManualTurn();
  }

  /** Manual turns: the gateway's VAD heard the caller stop; commit the turn and ask for the answer. */
  private endManualTurn(): void {
    this.send({ type: 'input_audio_buffer.commit' });
    // A cancelled response may not have reported done yet: answer right after it.
    this.responses.request();
    this.emit('speech_stopped', this.manual!.lastLoudAt, performance.now());
  }

  playoutCleared(mark: PlayedMark): void {
    const gatewayMs = this.speechAt !== undefined ? performance.now() - this.speechAt : undefined;
    this.speechAt = undefined;
    if (this.responses.active) {
      // With server/semantic VAD the server usually cancels by itself; a "not active" reply is expected then.
      this.send({ type: 'response.cancel', response_id: this.responses.active });
    }
    const item = mark.itemId;
    const truncatedAt = this.outputItems.truncateAt(item, mark.playedMs);
    if (item !== undefined && truncatedAt !== undefined) {
      this.send({ type: 'conversation.item.truncate', item_id: item, content_index: 0, audio_end_ms: truncatedAt });
    }
    const interrupted = truncatedAt !== undefined || this.responses.active !== undefined;
    this.log[interrupted ? 'info' : 'debug'](
      { item, playedMs: mark.playedMs, truncatedAt, gatewayMs: gatewayMs?.toFixed(2) },
      interrupted ? 'caller barged in; playout cleared' : 'caller started speaking',
    );
  }

  startFirstTurn(): boolean {
    if (this.firstTurnWanted || this.route.firstTurn.mode === 'none') return false;
    this.firstTurnWanted = true;
    if (this.ready) this.sendFirstTurn();
    return true;
  }

  private sendFirstTurn(): void {
    if (this.firstTurnSent) return;
    const ev = firstTurnEvent(this.route.firstTurn, this.route.instructions);
    if (!ev) return;
    this.firstTurnSent = true;
    this.log.info({ mode: this.route.firstTurn.mode }, 'asking the AI for its first turn');
    this.send(ev);
  }

  say(text: string): void {
    if (this.responses.queueSay(text)) return;
    const sent = this.send(sayEvent(text));
    if (!sent) this.log.warn('operator say ignored: Realtime session not connected');
  }

  sendText(text: string): void {
    if (!this.send(userTextEvent(text))) {
      this.log.warn('caller text input dropped: Realtime session not connected');
      return;
    }
    // One response at a time: if the model is speaking, it answers right after.
    this.responses.request();
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.abort.abort();
    this.pending?.reject(new GatewayError('ai_connect_failed', `call ended (${reason})`, this.callId));
    const ws = this.ws;
    this.ws = undefined;
    if (ws) closeRealtimeSocket(ws);
    this.log.info({ reason, ...this.stats }, 'Realtime session closed');
    this.emit('closed', reason);
  }

  // ---- server events ----------------------------------------------------------------------

  private onMessage(data: WebSocket.RawData): void {
    const receivedAt = performance.now();
    let ev: RealtimeServerEvent;
    try {
      ev = parseServerEvent(data.toString());
    } catch (err) {
      this.stats.errors++;
      this.log.warn({ err: (err as Error).message }, 'unreadable Realtime event ignored');
      return;
    }
    try {
      this.handle(ev, receivedAt);
    } catch (err) {
      // A malformed event must not take the call down with it.
      this.stats.errors++;
      this.log.warn({ type: ev.type, err: (err as Error).message }, 'Realtime event could not be handled');
    }
  }

  private handle(ev: RealtimeServerEvent, receivedAt: number): void {
    switch (ev.type) {
      case 'session.updated':
        if (!this.ready) {
          this.ready = true;
          this.pending?.resolve();
          if (this.firstTurnWanted) this.sendFirstTurn();
        }
        return;
      case 'input_audio_buffer.speech_started':
        this.speechAt = receivedAt;
        this.emit('speech_started'); // the bridge clears playout and calls playoutCleared() synchronously
        return;
      case 'input_audio_buffer.speech_stopped': {
        const td = this.route.turnDetection;
        const endedAt = this.appendClock.endOfSpeech(
          ev.audio_end_ms,
          td?.type === 'server_vad' ? td.silenceDurationMs : 0,
        );
        this.emit('speech_stopped', endedAt, endedAt);
        return;
      }
      case 'conversation.item.input_audio_transcription.completed':
        this.addTranscript({ role: 'caller', text: ev.transcript, at: Date.now(), itemId: ev.item_id });
        return;
      case 'response.created': {
        const id = ev.response.id ?? `resp-${Date.now()}`;
        this.responses.active = id;
        this.emit('response_started', id);
        return;
      }
      case 'response.output_audio.delta':
        return this.onDelta(ev, receivedAt);
      case 'response.output_audio.done':
        this.outputItems.markDone(ev.item_id);
        return;
      case 'response.output_audio_transcript.done':
        this.addTranscript({ role: 'ai', text: ev.transcript, at: Date.now(), itemId: ev.item_id });
        return;
      case 'response.function_call_arguments.done':
        void this.runTool(ev);
        return;
      case 'response.done':
        return this.onResponseDone(ev);
      case 'error':
        return this.onServerError(ev);
      default:
        return; // informational events (item added/done, rate limits, ...) need no action
    }
  }

  private onDelta(ev: ServerEventOf<'response.output_audio.delta'>, receivedAt: number): void {
    if (typeof ev.delta !== 'string') throw new Error('audio delta without data');
    this.hooks.deltaReceived?.(this.callId, ev.item_id, receivedAt);
    const chunk = Buffer.from(ev.delta, 'base64');
    this.stats.deltas++;
    this.outputItems.addAudio(ev.item_id, durationMs(this.outputFormat, chunk.length));
    this.emit('audio', chunk, ev.item_id);
  }

  private onResponseDone(ev: ServerEventOf<'response.done'>): void {
    const id = ev.response.id ?? this.responses.active ?? 'unknown';
    const failure = responseFailure(ev.response);
    this.responses.active = undefined;
    if (failure) {
      this.stats.failedResponses++;
      this.failedInARow++;
      this.log.warn(
        { response: id, status: ev.response.status, reason: failure, inARow: this.failedInARow },
        'AI response failed: the caller heard no answer to this turn',
      );
      this.emit('response_failed', failure);
    } else if (ev.response.status === 'completed') {
      this.failedInARow = 0;
    } else if (ev.response.status) {
      this.log.debug({ response: id, status: ev.response.status }, 'response ended early');
    }
    this.emit('response_done', id);
    if (failure && this.failedInARow >= this.route.maxFailedResponses) {
      const why = `${this.failedInARow} responses in a row failed (last: ${failure})`;
      void this.unavailable(new GatewayError('upstream', why, this.callId));
      return;
    }
    this.responses.next((text) => this.say(text));
  }

  private onServerError(ev: ServerEventOf<'error'>): void {
    const e = ev.error ?? { type: 'unknown', message: 'error event without details' };
    const benign = e.code === 'response_cancel_not_active';
    const info = { type: e.type, code: e.code, message: e.message, clientEvent: e.event_id };
    if (!this.ready && this.pending) {
      // The session refused its configuration: the call cannot proceed.
      this.pending.reject(
        new GatewayError('ai_connect_failed', `OpenAI Realtime rejected the session: ${e.message}`, this.callId),
      );
      return;
    }
    if (benign) {
      this.log.debug(info, 'Realtime: nothing to cancel');
      return;
    }
    if (e.code === 'session_expired') {
      // OpenAI caps a session's length and closes the socket right after this: onDropped re-seeds a
      // new session, so the call carries on. Expected on long calls, not an AI failure.
      this.log.info(info, 'Realtime session hit its length limit; a new session will take over');
      return;
    }
    this.stats.errors++;
    this.log.warn(info, 'Realtime error event');
    this.emit('error', new GatewayError('ai_protocol', `Realtime ${e.code ?? e.type}: ${e.message}`, this.callId));
  }

  private async runTool(ev: ServerEventOf<'response.function_call_arguments.done'>): Promise<void> {
    const { record, reply, result } = await this.tools.answer(ev, {
      callId: this.callId,
      log: this.log,
      control: this.control,
      signal: this.abort.signal,
    });
    if (this.closed) return;
    this.emit('tool_call', record);
    this.send(reply);
    result.after?.();
    if (!result.respond) return;
    // Only one response at a time: if the model is still finishing this one, ask right after it.
    this.responses.request();
  }

  private addTranscript(entry: TranscriptEntry): void {
    this.transcript.push(entry);
    if (this.transcript.length > 200) this.transcript.shift();
    this.emit('transcript', entry);
  }
}
