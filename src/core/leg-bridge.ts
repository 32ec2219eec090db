import { createCodec, type FrameCodec } from './audio/codecs.js';
import { createConverter, type FrameConverter } from './audio/converter.js';
import { describeFormat } from './audio/format.js';
import type { Call } from './call.js';
import type { FrameClock } from './frame-clock.js';
import type { MediaLeg } from './media-leg.js';
import type { MediaTap, TapSource } from './media-tap.js';

/** Opus sides are tapped at 16 kHz (wideband: enough for a recording or a listener, cheap to decode). */
const OPUS_TAP_RATE = 16000;

export interface LegBridgeStats {
  /** Frames moved a → b and b → a. */
  aToB: number;
  bToA: number;
  /** Ticks where a side had nothing due and the other got silence. */
  silenceToA: number;
  silenceToB: number;
  badFrames: number;
}

/** One direction: frames from `from` converted (or passed through) to `to`'s format. */
interface Direction {
  from: MediaLeg;
  to: MediaLeg;
  convert: FrameConverter;
  silence: Buffer;
  /** Decodes `from`'s frames for taps only (its own state: the media path's codecs are untouched). */
  tapDecoder: FrameCodec;
}

/**
 * Two parties on one media clock (a caller handed to a person): each tick moves one frame each way
 * through the legs' own jitter buffers, converting only when the formats differ (WhatsApp Opus ⇄
 * G.711; G.711 ⇄ G.711 of the same law is passthrough). A side with nothing due gets encoded
 * silence, so both far ends keep receiving a packet every 20 ms. Taps hear `a` as the caller and
 * `b` as the other party, each at its leg's rate (Opus at 16 kHz), decoded only while tapped.
 */
export class LegBridge implements TapSource {
  readonly stats: LegBridgeStats = { aToB: 0, bToA: 0, silenceToA: 0, silenceToB: 0, badFrames: 0 };
  private readonly ab: Direction;
  private readonly ba: Direction;
  private unsubscribe: (() => void) | undefined;
  private readonly taps = new Set<MediaTap>();
  readonly tapRates: { readonly caller: number; readonly other: number };

  constructor(
    private readonly call: Call,
    readonly a: MediaLeg,
    readonly b: MediaLeg,
    private readonly clock: FrameClock,
  ) {
    this.ab = direction(a, b, call.id);
    this.ba = direction(b, a, call.id);
    this.tapRates = { caller: tapRate(a), other: tapRate(b) };
    call.log.info(
      {
        a: describeFormat(a.format),
        b: describeFormat(b.format),
        passthrough: this.passthrough,
      },
      'leg bridge formats',
    );
  }

  get passthrough(): boolean {
    return this.ab.convert.passthrough && this.ba.convert.passthrough;
  }

  /** Hear both directions every tick (caller = a, other = b); returns the function that stops it. */
  addTap(tap: MediaTap): () => void {
    this.taps.add(tap);
    return () => void this.taps.delete(tap);
  }

  start(): void {
    this.unsubscribe ??= this.clock.subscribe(() => this.tick());
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** One 20 ms step each way; never throws (a bad frame is counted and skipped). */
  tick(): void {
    const ab = this.move(this.ab);
    if (ab) this.stats.aToB++;
    else this.stats.silenceToB++;
    const ba = this.move(this.ba);
    if (ba) this.stats.bToA++;
    else this.stats.silenceToA++;
    if (this.taps.size === 0) return;
    const caller = this.decodeForTap(this.ab, ab);
    const other = this.decodeForTap(this.ba, ba);
    for (const tap of this.taps) {
      try {
        tap(caller, other);
      } catch (err) {
        this.countBad(err); // a listener's failure must not stop the call's media
      }
    }
  }

  /** The frame that moved, or null when none did. */
  private move(d: Direction): Buffer | null {
    try {
      const frame = d.from.readFrame();
      d.to.writeFrame(frame ? d.convert.convert(frame) : d.silence);
      return frame;
    } catch (err) {
      this.countBad(err);
      return null;
    }
  }

  private decodeForTap(d: Direction, frame: Buffer | null): Int16Array | null {
    if (!frame) return null;
    try {
      return d.tapDecoder.decode(frame);
    } catch (err) {
      this.countBad(err);
      return null;
    }
  }

  private countBad(err: unknown): void {
    this.stats.badFrames++;
    if (this.stats.badFrames === 1 || this.stats.badFrames % 50 === 0)
      this.call.log.warn({ err: (err as Error).message, count: this.stats.badFrames }, 'bad media frame skipped');
  }
}

function direction(from: MediaLeg, to: MediaLeg, callId: string): Direction {
  return {
    from,
    to,
    convert: createConverter(from.format, to.format, callId),
    silence: silenceOf(to, callId),
    tapDecoder: createCodec(from.format, tapRate(from), callId),
  };
}

function tapRate(leg: MediaLeg): number {
  return leg.format.codec === 'opus' ? OPUS_TAP_RATE : leg.format.sampleRate;
}

function silenceOf(leg: MediaLeg, callId: string): Buffer {
  return createCodec(leg.format, leg.format.codec === 'opus' ? 48000 : undefined, callId).silence();
}
