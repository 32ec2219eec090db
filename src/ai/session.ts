import type { AudioFormat } from '../core/audio/format.js';
import type { PlayedMark } from '../core/playout.js';
import type { TypedEmitter } from '../core/typed-emitter.js';
import type { Logger } from '../core/logger.js';

export interface TranscriptEntry {
  role: 'caller' | 'ai';
  text: string;
  at: number; // epoch ms
  itemId?: string;
}

export interface ToolCallRecord {
  name: string;
  callId: string;
  arguments: string;
  output?: string;
  at: number;
}

/** What an AI backend may do to its call (through tools); implemented by the core, not the AI. */
export interface CallControl {
  /** End the call once everything said so far has been played to the caller. */
  hangupAfterPlayout(reason: string): void;
  /**
   * Hand the call to a person: SIP REFER, or the gateway dials them and bridges (route
   * `transfer.mode`). Resolves once the outcome is known: transferred, or the caller is back with
   * the AI (busy, no answer, rejected) and `outcome` says which.
   */
  transfer(destination: string, opts?: TransferOptions): Promise<TransferResult>;
  /** Send keypad digits to the far end (RFC 4733 on SIP), e.g. to navigate an IVR. */
  sendDtmf?(digits: string): { ok: boolean; detail: string };
}

export interface TransferOptions {
  /** Warm transfer: what the person hears before the caller is connected. */
  brief?: string;
}

/** How a transfer ended, as the model (tool output) and the call record see it. */
export type TransferOutcome =
  | 'referred'
  | 'bridged'
  | 'busy'
  | 'no_answer'
  | 'rejected'
  | 'failed'
  | 'not_allowed'
  | 'unsupported'
  /** The trunk / front the person's leg would go out on is at its concurrent-call cap. */
  | 'no_capacity';

export interface TransferResult {
  ok: boolean;
  detail: string;
  outcome?: TransferOutcome;
}

export type AiSessionEvents = {
  ready: [];
  /** Audio for the caller, in the session's outputFormat, any length. */
  audio: [chunk: Buffer, itemId: string | undefined];
  speech_started: [];
  /**
   * The caller finished a turn. `endedAt` (performance.now() clock) is when the end of the
   * caller's speech passed through the gateway to the AI, when the backend can tell; else now.
   * `handedAt` is when the AI was asked to answer, when that is later (manual turns: the gateway's
   * VAD waited for silence, then committed).
   */
  speech_stopped: [endedAt?: number, handedAt?: number];
  response_started: [responseId: string];
  response_done: [responseId: string];
  /** A response ended `failed`/`incomplete` (quota, rate limit, content filter...); `reason` is a short code. */
  response_failed: [reason: string];
  transcript: [entry: TranscriptEntry];
  tool_call: [record: ToolCallRecord];
  error: [err: Error];
  closed: [reason: string];
};

/**
 * A conversation with a speech AI for one call. Backends: local agent, Realtime WebSocket,
 * OpenAI SIP (sideband). Knows nothing of SIP or WhatsApp: only formats and 20 ms frames.
 */
export interface AiSession extends TypedEmitter<AiSessionEvents> {
  /** Format the session wants caller audio in (frames of 20 ms). */
  readonly inputFormat: AudioFormat;
  /** Format of the audio it emits. */
  readonly outputFormat: AudioFormat;
  start(): Promise<void>;
  sendAudio(frame: Buffer): void;
  /** The bridge cleared playout for barge-in; `mark` says how much of the item the caller heard. */
  playoutCleared(mark: PlayedMark): void;
  /**
   * The caller can hear us now (answered): take the route's first turn (greet, say a text, or
   * wait). Called once by the core; before it the session is ready but silent. Returns true when
   * the AI was asked to speak (the core then times answer → first audio).
   */
  startFirstTurn?(): boolean;
  /** Ask the AI to say something (operator "say"). */
  say?(text: string): void;
  /** Caller input that is not speech (keypad digits as text): one user message, then a response. */
  sendText?(text: string): void;
  close(reason: string): Promise<void>;
}

export interface AiSessionOptions {
  callId: string;
  /** The leg's wire format: backends choose formats that avoid transcoding where they can. */
  legFormat: AudioFormat;
  log: Logger;
  control: CallControl;
}

/** Creates sessions for one configured route. */
export interface AiBackend {
  readonly kind: string;
  open(opts: AiSessionOptions): AiSession;
}
