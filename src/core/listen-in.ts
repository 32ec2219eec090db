import { createConverter } from './audio/converter.js';
import { l16 } from './audio/format.js';
import { pcmBuffer } from './audio/level.js';
import type { MediaLeg } from './media-leg.js';
import { followCallAudio, type TapSourceOwner } from './media-tap.js';

/**
 * Operator listen-in: feeds a listener's leg with both directions of the call, mixed into one mono
 * stream at `rate`, one frame per bridge tick (silence included, so the listener's RTP never
 * pauses). It follows the call from bridge to bridge (AI, hold, the person after a bridged
 * transfer). The call's own media path is untouched: the mix is taken from the bridge's tap after
 * both directions have moved. Returns the function that stops it.
 */
export function feedListener(call: TapSourceOwner, rate: number, listener: MediaLeg, callId: string): () => void {
  const perFrame = rate / 50;
  const toListener = createConverter(l16(rate), listener.format, callId);
  const mix = new Int16Array(perFrame);
  return followCallAudio(call, rate, (caller, other) => {
    for (let i = 0; i < perFrame; i++) {
      const sum = (caller?.[i] ?? 0) + (other?.[i] ?? 0);
      mix[i] = sum > 32767 ? 32767 : sum < -32768 ? -32768 : sum;
    }
    listener.writeFrame(toListener.convert(pcmBuffer(mix)));
  });
}
