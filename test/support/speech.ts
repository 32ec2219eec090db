/**
 * Content check for speech that went through a codec path: the 10 ms loudness envelope of what
 * came out is compared with the reference utterance's (Pearson correlation at the best alignment).
 * Opus, resampling and G.711 change the waveform but keep the syllable rhythm, so the same words
 * correlate highly and other words (or noise of the same energy) do not.
 */
function envelope(pcm: Int16Array, rate: number): number[] {
  const n = Math.round(rate / 100);
  const out: number[] = [];
  for (let i = 0; i + n <= pcm.length; i += n) {
    let sum = 0;
    for (let k = i; k < i + n; k++) sum += pcm[k]! * pcm[k]!;
    out.push(10 * Math.log10(sum / n + 1));
  }
  return out;
}

function correlation(a: number[], b: number[]): number {
  const mean = (v: number[]) => v.reduce((s, x) => s + x, 0) / v.length;
  const ma = mean(a);
  const mb = mean(b);
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - ma) * (b[i]! - mb);
    da += (a[i]! - ma) ** 2;
    db += (b[i]! - mb) ** 2;
  }
  return da && db ? num / Math.sqrt(da * db) : 0;
}

/** Best correlation of `ref`'s envelope against any same-length stretch of `got`'s (-1..1). */
export function speechMatch(ref: Int16Array, refRate: number, got: Int16Array, gotRate: number): number {
  const r = envelope(ref, refRate);
  const g = envelope(got, gotRate);
  if (g.length < r.length) return correlation(r.slice(0, g.length), g);
  let best = -1;
  for (let lag = 0; lag + r.length <= g.length; lag++)
    best = Math.max(best, correlation(r, g.slice(lag, lag + r.length)));
  return best;
}

/** The 20 ms frames (at 24 kHz) that carry sound (above -45 dBFS), joined: silence removed. */
export function audible(pcm: Int16Array, frame = 480): Int16Array {
  const keep: number[] = [];
  for (let i = 0; i + frame <= pcm.length; i += frame) {
    let sum = 0;
    for (let k = i; k < i + frame; k++) sum += pcm[k]! * pcm[k]!;
    if (10 * Math.log10(sum / frame / 32768 ** 2 + 1e-12) > -45) for (let k = i; k < i + frame; k++) keep.push(pcm[k]!);
  }
  return Int16Array.from(keep);
}
