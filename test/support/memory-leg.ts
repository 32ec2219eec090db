import type { AudioFormat } from '../../src/core/audio/format.js';
import type { HangupReason, LegQuality, MediaLeg, MediaLegEvents } from '../../src/core/media-leg.js';
import { TypedEmitter } from '../../src/core/typed-emitter.js';

/** A MediaLeg in memory: plays queued frames as the caller, records what the gateway sends. */
export class MemoryLeg extends TypedEmitter<MediaLegEvents> implements MediaLeg {
  readonly id: string;
  readonly inbound: Buffer[] = [];
  readonly written: Buffer[] = [];
  readonly writeTimes: number[] = [];
  closedWith: HangupReason | undefined;
  /** What readFrame returns once the queue is empty (silence by default). */
  idle: Buffer | null;

  constructor(
    readonly callId: string,
    readonly format: AudioFormat,
    idle: Buffer | null = null,
  ) {
    super();
    this.id = `mem-${callId}`;
    this.idle = idle;
  }

  feed(frames: Buffer[]): void {
    this.inbound.push(...frames);
  }

  readFrame(): Buffer | null {
    return this.inbound.shift() ?? this.idle;
  }

  writeFrame(frame: Buffer): void {
    this.written.push(frame);
    this.writeTimes.push(performance.now());
  }

  hangup(reason: HangupReason): void {
    this.emit('hangup', reason);
  }

  dtmf(digit: string): void {
    this.emit('dtmf', digit, 100);
  }

  async close(reason: HangupReason): Promise<void> {
    if (this.closedWith) return;
    this.closedWith = reason;
    this.emit('closed');
  }

  quality(): LegQuality {
    return { packetsSent: this.written.length, packetsReceived: 0 };
  }
}
