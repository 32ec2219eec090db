import { type AudioFormat, sameFormat } from './format.js';
import { createCodec, type FrameCodec } from './codecs.js';
import { Resampler } from './resampler.js';

/**
 * Converts 20 ms frames from one wire format to another for one direction of one call.
 * Identical formats pass straight through (G.711 legs to an AI that speaks G.711 cost nothing).
 * Opus decodes/encodes directly at the PCM rate of the other side, so Opus⇄24 kHz needs no resampler.
 */
export interface FrameConverter {
  readonly passthrough: boolean;
  convert(frame: Buffer): Buffer;
}

export function createConverter(from: AudioFormat, to: AudioFormat, callId?: string): FrameConverter {
  if (sameFormat(from, to)) return { passthrough: true, convert: (f) => f };
  // Pick PCM rates so Opus does the rate change itself where it can.
  const opusRates = new Set([8000, 12000, 16000, 24000, 48000]);
  const decodeRate = from.codec === 'opus' && opusRates.has(to.sampleRate) ? to.sampleRate : from.sampleRate;
  const encodeRate = to.codec === 'opus' && opusRates.has(decodeRate) ? decodeRate : to.sampleRate;
  const decoder: FrameCodec = createCodec(from, decodeRate, callId);
  const encoder: FrameCodec = createCodec(to, encodeRate, callId);
  const resampler = decodeRate !== encodeRate ? new Resampler(decodeRate, encodeRate) : undefined;
  return {
    passthrough: false,
    convert(frame: Buffer): Buffer {
      const pcm = decoder.decode(frame);
      return encoder.encode(resampler ? resampler.process(pcm) : pcm);
    },
  };
}
