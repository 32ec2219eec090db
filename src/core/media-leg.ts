import type { AudioFormat } from './audio/format.js';
import type { JitterStats } from './jitter-buffer.js';
import type { TypedEmitter } from './typed-emitter.js';

/** Why a leg (and usually its call) ended; logged and written to the call record. */
export interface HangupReason {
  /** Who ended it. */
  by: 'remote' | 'gateway' | 'ai' | 'operator' | 'timeout' | 'error';
  /** Short machine-readable cause, e.g. `bye`, `cancel`, `rtp_timeout`, `terminate`. */
  cause: string;
  detail?: string;
  /** After a bridged transfer: which party's leg ended the call (the caller's or the person's). */
  party?: 'caller' | 'target';
  /**
   * Set when the call is refused because a service (the AI) is temporarily unavailable: a front
   * refusing before answer tells the network when to retry (SIP 503 + Retry-After) so it can fail over.
   */
  retryAfterSec?: number;
}

export interface LegQuality {
  jitter?: JitterStats;
  packetsSent: number;
  packetsReceived: number;
}

export type MediaLegEvents = {
  /** Media is flowing (RTP latched / ICE+DTLS done). */
  started: [];
  dtmf: [digit: string, durationMs: number];
  /** The far end went away; the call should end. */
  hangup: [reason: HangupReason];
  closed: [];
};

/**
 * What a front (SIP, WhatsApp, test peer) hands the core: one party's audio as 20 ms frames in
 * the leg's own wire format, pulled and pushed by the bridge once per media-clock tick.
 */
export interface MediaLeg extends TypedEmitter<MediaLegEvents> {
  readonly id: string;
  readonly callId: string;
  /** Wire format of frames returned by readFrame and accepted by writeFrame. */
  readonly format: AudioFormat;
  /** The next 20 ms of the party's audio (from the jitter buffer), or null when none is due. */
  readFrame(): Buffer | null;
  /** Send 20 ms of audio to the party. Called every tick once bridged (silence included). */
  writeFrame(frame: Buffer): void;
  /** Send one keypad digit (RFC 4733 / telephone-event); false when the leg cannot. */
  sendDtmf?(digit: string, durationMs?: number): boolean;
  /** Release sockets/timers; `reason` is passed to the front for its signalling (BYE, terminate). */
  close(reason: HangupReason): Promise<void>;
  quality(): LegQuality;
}
