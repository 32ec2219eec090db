import { createCodec } from './audio/codecs.js';
import { createConverter, type FrameConverter } from './audio/converter.js';
import { describeFormat } from './audio/format.js';
import type { Call } from './call.js';
import type { FrameClock } from './frame-clock.js';
import type { MediaLeg } from './media-leg.js';

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
}

/**
 * Two parties on one media clock (a caller handed to a person): each tick moves one frame each way
 * through the legs' own jitter buffers, converting only when the formats differ (WhatsApp Opus ⇄
 * G.711; G.711 ⇄ G.711 of the same law is passthrough). A side with nothing due gets encoded
 * silence, so both far ends keep receiving a packet every 20 ms.
 */
export class LegBridge {
  readonly stats: LegBridgeStats = { aToB: 0, bToA: 0, silenceToA: 0, silenceToB: 0, badFrames: 0 };
  private readonly ab: Direction;
  private readonly ba: Direction;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly call: Call,
    readonly a: MediaLeg,
    readonly b: MediaLeg,
    private readonly clock: FrameClock,
  ) {
    this.ab = { from: a, to: b, convert: createConverter(a.format, b.format, call.id), silence: silenceOf(b, call.id) };
    this.ba = { from: b, to: a, convert: createConverter(b.format, a.format, call.id), silence: silenceOf(a, call.id) };
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

  start(): void {
    this.unsubscribe ??= this.clock.subscribe(() => this.tick());
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** One 20 ms step each way; never throws (a bad frame is counted and skipped). */
  tick(): void {
    if (this.move(this.ab)) this.stats.aToB++;
    else this.stats.silenceToB++;
    if (this.move(this.ba)) this.stats.bToA++;
    else this.stats.silenceToA++;
  }

  private move(d: Direction): boolean {
    let frame: Buffer | null = null;
    try {
      frame = d.from.readFrame();
      d.to.writeFrame(frame ? d.convert.convert(frame) : d.silence);
    } catch (err) {
      this.stats.badFrames++;
      if (this.stats.badFrames === 1 || this.stats.badFrames % 50 === 0)
        this.call.log.warn({ err: (err as Error).message, count: this.stats.badFrames }, 'bad media frame skipped');
      return false;
    }
    return frame !== null;
  }
}

function silenceOf(leg: MediaLeg, callId: string): Buffer {
  return createCodec(leg.format, leg.format.codec === 'opus' ? 48000 : undefined, callId).silence();
}
