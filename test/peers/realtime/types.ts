import { randomBytes } from 'node:crypto';
import type { RealtimeServerEvent } from 'openai/resources/realtime/realtime';
import type { WebSocket } from 'ws';
import type { EnergyVad } from '../../../src/core/audio/vad.js';
import type { ClientEventOf, SessionConfig } from './schemas.js';
import type { StreamShape } from './stream.js';

/**
 * The Realtime stand-in's options, what it records per connection, and the seam its parts share:
 * the server (server.ts) owns sockets and timers; client events (events.ts), caller turns and VAD
 * (turns.ts), answers (responses.ts) and SIP sideband playout (sideband.ts) act through a
 * ServerContext.
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

export interface ActiveResponse {
  answer: AnswerRecord;
  timer: NodeJS.Timeout | undefined;
  finish: (status: 'completed' | 'cancelled', reason?: 'turn_detected' | 'client_cancelled') => void;
}

/** One open connection: its public record plus the live state behind it. */
export interface Conn {
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
  playback: { responseId: string; stopTimer: NodeJS.Timeout | undefined; startedAt: number } | undefined;
  uncommittedMs: number;
  lastItemId: string | null;
  active: ActiveResponse | undefined;
  /** Assistant audio items and how much audio each carried (what truncate may cut). */
  audioItems: Map<string, number>;
  callIds: Set<string>;
  timers: Set<NodeJS.Timeout>;
}

/** Option defaults filled in (see RealtimeTestServer's constructor). */
export type ServerOptions = Required<
  Pick<
    RealtimeTestServerOptions,
    'toneMs' | 'speedup' | 'chunkMs' | 'vadThresholdDbfs' | 'dropConnections' | 'vadStartMs'
  >
> &
  RealtimeTestServerOptions;

/** What the server lends its parts: the live options, and sending/timers bound to one connection. */
export interface ServerContext {
  readonly opts: ServerOptions;
  send(c: Conn, ev: RealtimeServerEvent): void;
  sendError(c: Conn, code: string, message: string, clientEventId?: string): void;
  /** A client event that is not valid protocol: recorded, and answered with an error. */
  violation(c: Conn, what: string, clientEventId?: string): void;
  /** A timer cleared when the connection is cleaned up. */
  later(c: Conn, ms: number, fn: () => void): NodeJS.Timeout;
}

export const id = (prefix: string) => `${prefix}_${randomBytes(8).toString('hex')}`;

/** A transcript as the deltas the service streams it in (words, each but the first with its space). */
export const words = (text: string): string[] => text.split(/(?= )/).filter((w) => w.length > 0);
