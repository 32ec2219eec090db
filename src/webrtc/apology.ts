import { chime, speak } from '../ai/local/tts.js';
import { createCodec } from '../core/audio/codecs.js';
import { OPUS_48K } from '../core/audio/format.js';
import type { FrameClock } from '../core/frame-clock.js';
import type { Logger } from '../core/logger.js';
import type { MediaLeg } from '../core/media-leg.js';

export const AI_UNAVAILABLE_APOLOGY = 'Sorry, the assistant is not available right now. Please call again later.';

/** Opus works at 24 kHz here, as the bridge does for WhatsApp legs. */
const RATE = 24000;
const FRAME = RATE / 50;
/** Silence after the words, so the last syllable is not cut by the hang-up. */
const TAIL_FRAMES = 15;

/**
 * Speaks a short apology (espeak-ng, or a chime without it) on an answered WhatsApp leg, one Opus
 * frame per media-clock tick, and resolves once it has all been sent. Used when the route's AI
 * cannot be reached and the route says `onAiUnavailable: apologise`.
 */
export async function playApology(leg: MediaLeg, clock: FrameClock, log: Logger, text = AI_UNAVAILABLE_APOLOGY) {
  let pcm: Int16Array;
  try {
    pcm = await speak(text, RATE);
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'espeak-ng failed; apologising with a chime');
    pcm = chime(RATE);
  }
  const codec = createCodec(OPUS_48K, RATE);
  const frames = Math.ceil(pcm.length / FRAME) + TAIL_FRAMES;
  await new Promise<void>((resolve) => {
    let i = 0;
    const stop = clock.subscribe(() => {
      const frame = new Int16Array(FRAME);
      if (i * FRAME < pcm.length) frame.set(pcm.subarray(i * FRAME, Math.min(pcm.length, (i + 1) * FRAME)));
      leg.writeFrame(codec.encode(frame));
      if (++i >= frames) {
        stop();
        resolve();
      }
    });
  });
}
