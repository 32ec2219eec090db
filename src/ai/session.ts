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
  /** Hand the call to another destination through the front's own mechanism (SIP REFER, ...). */
  transfer(destination: string): Promise<{ ok: boolean; detail: string }>;
}

export type AiSessionEvents = {
  ready: [];
  /** Audio for the caller, in the session's outputFormat, any length. */
  audio: [chunk: Buffer, itemId: string | undefined];
  speech_started: [];
  speech_stopped: [];
  response_started: [responseId: string];
  response_done: [responseId: string];
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
  /** Ask the AI to say something (operator "say"). */
  say?(text: string): void;
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
