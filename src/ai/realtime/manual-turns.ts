import type { GatewayVadConfig } from '../../config/schema.js';
import { createCodec, type FrameCodec } from '../../core/audio/codecs.js';
import type { AudioFormat } from '../../core/audio/format.js';
import { EnergyVad, type VadEvent } from '../../core/audio/vad.js';

/** Audio kept from before the VAD fired, so the turn does not lose its first syllable. */
const PRE_ROLL_FRAMES = 15;

/**
 * Manual turns (`turnDetection: null`): the gateway's own energy VAD decides where the caller's
 * turns start and end; the session then commits the input buffer and asks for a response. While
 * the caller is quiet, frames wait in a short pre-roll instead of being appended, so the input
 * buffer holds only the turn (not minutes of silence) and a commit is never empty.
 */
export class ManualTurns {
  private readonly vad: EnergyVad;
  private readonly codec: FrameCodec;
  private preRoll: Buffer[] = [];
  /** performance.now() when the last loud frame of the turn was handed on (the end of speech). */
  lastLoudAt = 0;

  constructor(
    format: AudioFormat,
    private readonly cfg: GatewayVadConfig,
  ) {
    this.vad = new EnergyVad({
      thresholdDbfs: cfg.thresholdDbfs,
      minSpeechMs: cfg.minSpeechMs,
      silenceMs: cfg.silenceMs,
    });
    this.codec = createCodec(format);
  }

  /** One 20 ms caller frame: the frames to append now, and whether a turn started or ended. */
  push(frame: Buffer): { append: Buffer[]; event: VadEvent } {
    const pcm = this.codec.decode(frame);
    const event = this.vad.process(pcm);
    if (this.vad.loud) this.lastLoudAt = performance.now();
    if (event === 'start') {
      const append = [...this.preRoll, frame];
      this.preRoll = [];
      return { append, event };
    }
    if (this.vad.speaking || event === 'stop') return { append: [frame], event };
    this.preRoll.push(frame);
    if (this.preRoll.length > PRE_ROLL_FRAMES) this.preRoll.shift();
    return { append: [], event };
  }
}
