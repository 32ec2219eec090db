import FFT from 'fft.js';
import { concatPcm } from '../../src/core/audio/level.js';

/** Test-side audio generation and measurement: what a telephony engineer checks with a scope. */

export function tone(freq: number, rate: number, ms: number, amplitude = 8000, phase = 0): Int16Array {
  const n = Math.round((rate * ms) / 1000);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.round(amplitude * Math.sin(phase + (2 * Math.PI * freq * i) / rate));
  return out;
}

export function frames(samples: Int16Array, perFrame: number): Int16Array[] {
  const out: Int16Array[] = [];
  for (let i = 0; i + perFrame <= samples.length; i += perFrame) out.push(samples.slice(i, i + perFrame));
  return out;
}

/** Join PCM pieces (the core's helper, under the name the tests use). */
export const concat = concatPcm;

export function toPcm(buf: Buffer): Int16Array {
  const copy = Buffer.from(buf);
  return new Int16Array(copy.buffer, copy.byteOffset, copy.length / 2);
}

/** Dominant frequency (Hz) by a Hann-windowed FFT with parabolic peak interpolation. */
export function dominantFrequency(samples: Int16Array, rate: number): number {
  let size = 1;
  while (size * 2 <= samples.length && size < 65536) size *= 2;
  const fft = new FFT(size);
  const input = new Array<number>(size);
  for (let i = 0; i < size; i++) input[i] = samples[i]! * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (size - 1)));
  const out = fft.createComplexArray() as number[];
  fft.realTransform(out, input);
  const mag = (k: number) => Math.hypot(out[2 * k]!, out[2 * k + 1]!);
  let best = 1;
  for (let k = 2; k < size / 2; k++) if (mag(k) > mag(best)) best = k;
  const a = Math.log(mag(best - 1) + 1e-9);
  const b = Math.log(mag(best) + 1e-9);
  const c = Math.log(mag(best + 1) + 1e-9);
  const shift = (0.5 * (a - c)) / (a - 2 * b + c);
  return ((best + shift) * rate) / size;
}

export function rmsOf(samples: Int16Array): number {
  let s = 0;
  for (const v of samples) s += v * v;
  return Math.sqrt(s / Math.max(1, samples.length));
}

export function dbfsOf(samples: Int16Array): number {
  const r = rmsOf(samples);
  return r === 0 ? -120 : 20 * Math.log10(r / 32768);
}

/** Power of one frequency (Goertzel), normalised so a full-amplitude sine reads ~0 dB. */
export function toneLevelDb(samples: Int16Array, rate: number, freq: number): number {
  const w = (2 * Math.PI * freq) / rate;
  const coeff = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (const x of samples) {
    const s0 = x + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  const amp = (2 * Math.sqrt(power)) / samples.length;
  return 20 * Math.log10(amp / 32768 + 1e-12);
}

/** Lag (in samples, 0..maxLag) at which `out` best matches `ref` (cross-correlation). */
export function bestLag(ref: Int16Array, out: Int16Array, maxLag: number): number {
  let best = 0;
  let bestScore = -Infinity;
  const n = Math.min(ref.length, out.length - maxLag);
  for (let lag = 0; lag <= maxLag; lag++) {
    let s = 0;
    for (let i = 0; i < n; i += 2) s += ref[i]! * out[i + lag]!;
    if (s > bestScore) {
      bestScore = s;
      best = lag;
    }
  }
  return best;
}

/** SNR (dB) of `out` against `ref` after aligning by the best lag and the best gain. */
export function snrDb(ref: Int16Array, out: Int16Array, maxLag = 200, skip = 0): number {
  const lag = bestLag(ref, out, maxLag);
  let num = 0;
  let cross = 0;
  const n = Math.min(ref.length, out.length - lag);
  for (let i = skip; i < n; i++) {
    num += ref[i]! * ref[i]!;
    cross += ref[i]! * out[i + lag]!;
  }
  const gain = cross / num;
  let noise = 0;
  for (let i = skip; i < n; i++) {
    const e = out[i + lag]! / gain - ref[i]!;
    noise += e * e;
  }
  return 10 * Math.log10(num / Math.max(noise, 1e-9));
}

/** Segmental SNR: mean of per-20 ms-segment SNRs, each clamped to [-10, 35] dB (ITU practice). */
export function segmentalSnrDb(ref: Int16Array, out: Int16Array, segment: number, maxLag = 200): number {
  const lag = bestLag(ref, out, maxLag);
  const n = Math.min(ref.length, out.length - lag);
  const vals: number[] = [];
  for (let s = 0; s + segment <= n; s += segment) {
    let sig = 0;
    let noise = 0;
    for (let i = s; i < s + segment; i++) {
      sig += ref[i]! * ref[i]!;
      const e = out[i + lag]! - ref[i]!;
      noise += e * e;
    }
    if (sig < segment * 100 * 100) continue; // skip near-silent segments
    vals.push(Math.min(35, Math.max(-10, 10 * Math.log10(sig / Math.max(noise, 1e-9)))));
  }
  return vals.reduce((a, b) => a + b, 0) / Math.max(1, vals.length);
}

/**
 * Largest sample-to-sample step at frame borders divided by the largest step inside frames.
 * A click or discontinuity at a border shows as a ratio well above 1.
 */
export function borderStepRatio(samples: Int16Array, perFrame: number, skipFrames = 2): number {
  let inner = 0;
  let border = 0;
  for (let i = perFrame * skipFrames + 1; i < samples.length; i++) {
    const d = Math.abs(samples[i]! - samples[i - 1]!);
    if (i % perFrame === 0) border = Math.max(border, d);
    else inner = Math.max(inner, d);
  }
  return border / Math.max(1, inner);
}

/**
 * SINAD of a pure tone (dB): least-squares fit of a sine at `freq`, everything else is noise and
 * distortion. Independent of delay, so it grades codecs/resamplers the way an audio analyser does.
 */
export function toneSinadDb(samples: Int16Array, rate: number, freq: number): number {
  const w = (2 * Math.PI * freq) / rate;
  let ss = 0;
  let cc = 0;
  let sc = 0;
  let xs = 0;
  let xc = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = Math.sin(w * i);
    const c = Math.cos(w * i);
    ss += s * s;
    cc += c * c;
    sc += s * c;
    xs += samples[i]! * s;
    xc += samples[i]! * c;
  }
  const det = ss * cc - sc * sc;
  const a = (xs * cc - xc * sc) / det;
  const b = (xc * ss - xs * sc) / det;
  let sig = 0;
  let noise = 0;
  for (let i = 0; i < samples.length; i++) {
    const fit = a * Math.sin(w * i) + b * Math.cos(w * i);
    sig += fit * fit;
    const e = samples[i]! - fit;
    noise += e * e;
  }
  return 10 * Math.log10(sig / Math.max(noise, 1e-9));
}

/**
 * The tone's level (dB) over the loudest 100 ms window, stepping 20 ms. On a loaded box frames
 * arrive late or are concealed, and a single Goertzel over the whole stretch loses level to the
 * phase jumps; a gain error still lowers every window.
 */
export function loudestToneDb(pcm: Int16Array, rate: number, hz: number): number {
  const win = rate / 10;
  let best = -Infinity;
  for (let i = 0; i + win <= pcm.length; i += rate / 50)
    best = Math.max(best, toneLevelDb(pcm.subarray(i, i + win), rate, hz));
  return best;
}
