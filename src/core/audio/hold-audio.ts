import { readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Pcm } from './speech.js';

/**
 * A route's own hold audio (`transfer.holdAudio`): a WAV played looped to the caller while the
 * person's phone rings. Only what plays cleanly on every leg is accepted — mono 16-bit PCM at a
 * rate the resampler handles exactly (8/16/24/48 kHz) — and checked when the config loads, so a
 * bad file is a start-up error naming the file rather than silence on a live call. Hand-written:
 * a WAV's RIFF chunks are a few lines, and no maintained package does the strict checks we need.
 */
export const HOLD_AUDIO_RATES = [8000, 16000, 24000, 48000] as const;
/** 16 MiB: over 2.5 minutes at 48 kHz; a loop longer than that is not hold music. */
export const HOLD_AUDIO_MAX_BYTES = 16 * 1024 * 1024;
/** Shorter than a 20 ms frame cannot loop. */
const MIN_SAMPLES_MS = 20;

/** Parses and checks hold audio; throws an Error whose message says exactly what is wrong. */
export function parseHoldWav(buf: Buffer): Pcm {
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE')
    throw new Error('not a WAV file (no RIFF/WAVE header)');
  let fmt: { tag: number; channels: number; rate: number; bits: number } | undefined;
  for (let pos = 12; pos + 8 <= buf.length;) {
    const id = buf.toString('ascii', pos, pos + 4);
    const size = buf.readUInt32LE(pos + 4);
    const body = pos + 8;
    if (id === 'fmt ') {
      if (size < 16 || body + 16 > buf.length) throw new Error('WAV fmt chunk is truncated');
      fmt = {
        tag: buf.readUInt16LE(body),
        channels: buf.readUInt16LE(body + 2),
        rate: buf.readUInt32LE(body + 4),
        bits: buf.readUInt16LE(body + 14),
      };
      // WAVE_FORMAT_EXTENSIBLE carries the real format in its sub-format GUID's first two bytes.
      if (fmt.tag === 0xfffe && size >= 40 && body + 26 <= buf.length) fmt.tag = buf.readUInt16LE(body + 24);
    } else if (id === 'data') {
      if (!fmt) throw new Error('WAV has its data before the fmt chunk');
      checkFormat(fmt);
      const bytes = Math.min(size, buf.length - body) & ~1;
      const samples = new Int16Array(bytes / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = buf.readInt16LE(body + i * 2);
      if (samples.length < (fmt.rate * MIN_SAMPLES_MS) / 1000)
        throw new Error(`WAV has ${samples.length} samples: at least ${MIN_SAMPLES_MS} ms of audio is needed`);
      return { sampleRate: fmt.rate, samples };
    }
    pos = body + size + (size & 1);
  }
  throw new Error(fmt ? 'WAV has no data chunk' : 'WAV has no fmt chunk');
}

function checkFormat(f: { tag: number; channels: number; rate: number; bits: number }): void {
  if (f.tag !== 1) throw new Error(`WAV is not PCM (format tag ${f.tag}); convert it to 16-bit PCM`);
  if (f.channels !== 1) throw new Error(`WAV has ${f.channels} channels, need mono`);
  if (f.bits !== 16) throw new Error(`WAV has ${f.bits}-bit samples, need 16-bit`);
  if (!(HOLD_AUDIO_RATES as readonly number[]).includes(f.rate))
    throw new Error(`WAV is ${f.rate} Hz, need one of ${HOLD_AUDIO_RATES.join(', ')} Hz`);
}

/** Config-load check: undefined when `path` is usable hold audio, else why not. */
export function holdAudioProblem(path: string): string | undefined {
  try {
    const size = statSync(path).size;
    if (size > HOLD_AUDIO_MAX_BYTES) return `${path}: ${size} bytes, at most ${HOLD_AUDIO_MAX_BYTES}`;
    parseHoldWav(readFileSync(path));
    return undefined;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return `${path}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'not readable' : e.message}`;
  }
}

/** Reads hold audio at transfer time (the file may have changed since start-up: checked again). */
export async function loadHoldAudio(path: string): Promise<Pcm> {
  const buf = await readFile(path);
  if (buf.length > HOLD_AUDIO_MAX_BYTES)
    throw new Error(`${path}: ${buf.length} bytes, at most ${HOLD_AUDIO_MAX_BYTES}`);
  return parseHoldWav(buf);
}
