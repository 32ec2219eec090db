import { spawn } from 'node:child_process';
import { createCodec } from './codecs.js';
import type { AudioFormat } from './format.js';
import { concatPcm, pcmBuffer } from './level.js';
import { Resampler } from './resampler.js';
import { GatewayError } from '../errors.js';

/** Parsed mono 16-bit WAV. */
export interface Pcm {
  sampleRate: number;
  samples: Int16Array;
}

export function parseWav(buf: Buffer): Pcm {
  if (buf.length < 44 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error('not a WAV file');
  }
  let pos = 12;
  let sampleRate = 0;
  let channels = 1;
  while (pos + 8 <= buf.length) {
    const id = buf.toString('ascii', pos, pos + 4);
    let size = buf.readUInt32LE(pos + 4);
    if (id === 'fmt ') {
      channels = buf.readUInt16LE(pos + 10);
      sampleRate = buf.readUInt32LE(pos + 12);
      const bits = buf.readUInt16LE(pos + 22);
      if (bits !== 16) throw new Error(`WAV has ${bits}-bit samples, need 16`);
    } else if (id === 'data') {
      // espeak-ng writes 0xFFFFFFFF as the size when streaming to stdout.
      if (size === 0xffffffff || pos + 8 + size > buf.length) size = buf.length - pos - 8;
      const bytes = Buffer.from(buf.subarray(pos + 8, pos + 8 + (size & ~1)));
      const all = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
      if (channels === 1) return { sampleRate, samples: all };
      const mono = new Int16Array(Math.floor(all.length / channels));
      for (let i = 0; i < mono.length; i++) mono[i] = all[i * channels]!;
      return { sampleRate, samples: mono };
    }
    pos += 8 + size + (size & 1);
  }
  throw new Error('WAV has no data chunk');
}

/** Resample a whole clip in 20 ms pieces (the resampler's natural unit). */
export function resampleClip(pcm: Pcm, rate: number): Int16Array {
  if (pcm.sampleRate === rate) return pcm.samples;
  const r = new Resampler(pcm.sampleRate, rate);
  const step = pcm.sampleRate / 50;
  const parts: Int16Array[] = [];
  for (let i = 0; i < pcm.samples.length; i += step) {
    const chunk = new Int16Array(step);
    chunk.set(pcm.samples.subarray(i, Math.min(i + step, pcm.samples.length)));
    parts.push(r.process(chunk));
  }
  return concatPcm(parts);
}

export interface SpeakOptions {
  voice?: string;
  wordsPerMinute?: number;
  timeoutMs?: number;
}

/** Speech from espeak-ng (Debian package espeak-ng), as 16-bit PCM at `rate`. */
export function speak(text: string, rate: number, opts: SpeakOptions = {}): Promise<Int16Array> {
  return new Promise((resolve, reject) => {
    const args = ['--stdout', '-v', opts.voice ?? 'en-us', '-s', String(opts.wordsPerMinute ?? 165), '--', text];
    const child = spawn('espeak-ng', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new GatewayError('timeout', 'espeak-ng took too long'));
    }, opts.timeoutMs ?? 10_000);
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new GatewayError('upstream', `espeak-ng unavailable: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new GatewayError('upstream', `espeak-ng exited with ${code}`));
      try {
        resolve(resampleClip(parseWav(Buffer.concat(chunks)), rate));
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

/** A two-note chime, used when espeak-ng is missing so the caller still hears the path works. */
export function chime(rate: number): Int16Array {
  const out = new Int16Array(Math.round(rate * 0.6));
  for (let i = 0; i < out.length; i++) {
    const f = i < out.length / 2 ? 660 : 880;
    out[i] = Math.round(6000 * Math.sin((2 * Math.PI * f * i) / rate));
  }
  return out;
}

/**
 * A short spoken prompt (apologies) in an AI output format (G.711 or L16): espeak-ng, or the chime
 * when espeak-ng is missing or slow, so the caller always hears something before the hang-up.
 */
export async function spokenPrompt(text: string, format: AudioFormat, timeoutMs = 3000): Promise<Buffer> {
  let pcm: Int16Array;
  try {
    pcm = await speak(text, format.sampleRate, { timeoutMs });
  } catch {
    pcm = chime(format.sampleRate);
  }
  if (format.codec === 'l16') return pcmBuffer(pcm);
  const codec = createCodec(format);
  const per = format.sampleRate / 50;
  const frames: Buffer[] = [];
  for (let i = 0; i < pcm.length; i += per) {
    const f = new Int16Array(per);
    f.set(pcm.subarray(i, Math.min(i + per, pcm.length)));
    frames.push(codec.encode(f));
  }
  return Buffer.concat(frames);
}
