import { GatewayError } from '../errors.js';

/** Codecs a leg or an AI session can carry. `l16` is 16-bit signed little-endian PCM, mono. */
export type Codec = 'pcmu' | 'pcma' | 'opus' | 'l16';

export interface AudioFormat {
  readonly codec: Codec;
  /** Sample rate of the audio itself (for Opus, the rate we decode to / encode from). */
  readonly sampleRate: number;
  readonly channels: 1;
}

/** Every frame in the gateway is 20 ms: the RTP packetisation both carriers and WhatsApp use. */
export const FRAME_MS = 20;

export const SUPPORTED_RATES = [8000, 16000, 24000, 48000] as const;

export const PCMU_8K: AudioFormat = { codec: 'pcmu', sampleRate: 8000, channels: 1 };
export const PCMA_8K: AudioFormat = { codec: 'pcma', sampleRate: 8000, channels: 1 };
export const OPUS_48K: AudioFormat = { codec: 'opus', sampleRate: 48000, channels: 1 };
export const l16 = (sampleRate: number): AudioFormat => ({ codec: 'l16', sampleRate, channels: 1 });

export function samplesPerFrame(format: AudioFormat): number {
  return (format.sampleRate * FRAME_MS) / 1000;
}

/** Exact byte size of one 20 ms frame, or undefined for variable-size codecs (Opus). */
export function frameBytes(format: AudioFormat): number | undefined {
  switch (format.codec) {
    case 'pcmu':
    case 'pcma':
      return samplesPerFrame(format);
    case 'l16':
      return samplesPerFrame(format) * 2;
    case 'opus':
      return undefined;
  }
}

export function sameFormat(a: AudioFormat, b: AudioFormat): boolean {
  return a.codec === b.codec && a.sampleRate === b.sampleRate && a.channels === b.channels;
}

export function describeFormat(f: AudioFormat): string {
  return `${f.codec}/${f.sampleRate}`;
}

export function parseCodec(name: string, callId?: string): Codec {
  const n = name.toLowerCase();
  if (n === 'pcmu' || n === 'pcma' || n === 'opus' || n === 'l16') return n;
  throw new GatewayError('unknown_codec', `unknown codec "${name}"`, callId);
}

/** Milliseconds of audio in a buffer of a fixed-size format. */
export function durationMs(format: AudioFormat, bytes: number): number {
  const perSample = format.codec === 'l16' ? 2 : 1;
  return (bytes / perSample / format.sampleRate) * 1000;
}
