import { createConverter } from './audio/converter.js';
import { l16 } from './audio/format.js';
import { pcmBuffer } from './audio/level.js';
import { Resampler } from './audio/resampler.js';
import type { Bridge } from './bridge.js';
import type { MediaLeg } from './media-leg.js';

/**
 * Operator listen-in: feeds a listener's leg with both directions of a bridged call, mixed into one
 * mono stream at the AI's output rate, one frame per bridge tick (silence included, so the
 * listener's RTP never pauses). The call's own media path is untouched: the mix is taken from the
 * bridge's tap after both directions have moved. Returns the function that stops it.
 */
export function feedListener(bridge: Bridge, listener: MediaLeg, callId: string): () => void {
  const rate = bridge.ai.outputFormat.sampleRate;
  const perFrame = rate / 50;
  const inRate = bridge.ai.inputFormat.sampleRate;
  const callerResampler = inRate !== rate ? new Resampler(inRate, rate) : undefined;
  const toListener = createConverter(l16(rate), listener.format, callId);
  const mix = new Int16Array(perFrame);
  return bridge.addTap((caller, ai) => {
    const left = caller && callerResampler ? callerResampler.process(caller) : caller;
    for (let i = 0; i < perFrame; i++) {
      const sum = (left?.[i] ?? 0) + (ai?.[i] ?? 0);
      mix[i] = sum > 32767 ? 32767 : sum < -32768 ? -32768 : sum;
    }
    listener.writeFrame(toListener.convert(pcmBuffer(mix)));
  });
}
