/** Signal level helpers used by VADs, meters and quality stats (cheap: one pass, no allocation). */

export function rms(samples: Int16Array): number {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i]!;
    sum += s * s;
  }
  return Math.sqrt(sum / samples.length);
}

/** RMS level in dB relative to full scale; silence is -Infinity clamped to -120. */
export function dbfs(samples: Int16Array): number {
  const r = rms(samples);
  return r <= 0 ? -120 : Math.max(-120, 20 * Math.log10(r / 32768));
}

export function pcmView(buf: Buffer): Int16Array {
  if (buf.byteOffset % 2 === 0) return new Int16Array(buf.buffer, buf.byteOffset, buf.length >> 1);
  const copy = Buffer.from(buf);
  return new Int16Array(copy.buffer, copy.byteOffset, copy.length >> 1);
}

export function pcmBuffer(samples: Int16Array): Buffer {
  return Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength);
}

/** Join PCM pieces into one buffer (clips, recordings, measurements). */
export function concatPcm(parts: readonly Int16Array[]): Int16Array {
  const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
