/**
 * How the Realtime stand-in cuts an answer's audio into `response.output_audio.delta` chunks and
 * when it sends each one. The real service is not kind: delta sizes vary and need not be whole
 * 20 ms frames (or even whole samples), and under load a model can stream slower than real time.
 */

export interface StreamShape {
  /** `fixed`: every delta `chunkMs` long. `irregular`: odd byte counts from ~10 to ~150 ms. */
  chunks: 'fixed' | 'irregular';
  /**
   * `bursts`: three deltas at a time, each burst `speedup` times ahead of real time (the usual
   * OpenAI pattern). `steady`: each delta is sent once its audio has been "generated" at
   * `speedup` x real time (0.9 = a model that cannot keep up).
   */
  pace: 'bursts' | 'steady';
  speedup: number;
  chunkMs: number;
  /** Seed for the irregular sizes, so a failing run can be replayed. */
  seed: number;
}

/** A small seeded PRNG (mulberry32): reproducible chunk sizes without a dependency. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Cut encoded audio into deltas of the shape's sizes (no padding: the last one is the remainder). */
export function splitAudio(audio: Buffer, bytesPerMs: number, shape: StreamShape, random: () => number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < audio.length;) {
    let size = Math.round(bytesPerMs * shape.chunkMs);
    if (shape.chunks === 'irregular') size = Math.round(bytesPerMs * (10 + random() * 140)) | 1;
    out.push(audio.subarray(off, Math.min(off + size, audio.length)));
    off += size;
  }
  return out;
}

/** When each delta is sent, in ms after the first one may go. */
export function sendTimes(sizes: number[], bytesPerMs: number, shape: StreamShape): number[] {
  if (shape.pace === 'bursts') {
    const burst = 3;
    const interval = (burst * shape.chunkMs) / shape.speedup;
    return sizes.map((_, i) => Math.floor(i / burst) * interval);
  }
  let generatedMs = 0;
  return sizes.map((size) => {
    generatedMs += size / bytesPerMs;
    return generatedMs / shape.speedup;
  });
}
