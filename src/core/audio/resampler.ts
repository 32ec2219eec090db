/**
 * Band-limited rational resampler (polyphase FIR, Kaiser-windowed sinc).
 *
 * Why hand-written: the gateway only needs fixed rational ratios between 8/16/24/48 kHz (plus
 * 22.05 kHz for espeak-ng), always on 20 ms frames. The WASM libraries (libsamplerate-js,
 * speex-resampler) cost ~130 µs per 48→24 kHz frame here — more than Opus itself — because of
 * the JS↔WASM copy per call. A polyphase filter with precomputed phase tables does the same
 * job with 70 dB stop-band attenuation in a few µs (see docs/performance.md).
 *
 * The anti-alias/anti-image low-pass sits at the lower Nyquist of the two rates, with a
 * transition band that ends at that Nyquist plus the same width, so nothing folds into the
 * passband (e.g. 24 kHz → 8 kHz: flat to ~3.4 kHz, ≥ 70 dB down from ~4.6 kHz).
 */

interface PolyphaseFilter {
  readonly up: number; // L
  readonly down: number; // M
  readonly tapsPerPhase: number;
  /** phases[p][j] = L · h[p + j·L] */
  readonly phases: Float64Array[];
}

const STOPBAND_DB = 70;

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Zeroth-order modified Bessel function of the first kind (series), for the Kaiser window. */
function besselI0(x: number): number {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 50; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

function designFilter(inRate: number, outRate: number): PolyphaseFilter {
  const g = gcd(inRate, outRate);
  const up = outRate / g;
  const down = inRate / g;
  const nyquist = Math.min(inRate, outRate) / 2;
  // Transition width: 12.5 % of the lower Nyquist, centred on it.
  const transition = nyquist * 0.25;
  const cutoff = nyquist; // centre of the transition band
  const highRate = inRate * up; // the virtual upsampled rate the prototype filter runs at
  const beta = 0.1102 * (STOPBAND_DB - 8.7);
  const dw = (2 * Math.PI * transition) / highRate;
  let length = Math.ceil((STOPBAND_DB - 8) / (2.285 * dw)) + 1;
  const tapsPerPhase = Math.ceil(length / up);
  length = tapsPerPhase * up;
  const fc = cutoff / highRate; // normalised cycles/sample
  const centre = (length - 1) / 2;
  const i0beta = besselI0(beta);
  const h = new Float64Array(length);
  for (let n = 0; n < length; n++) {
    const t = n - centre;
    const sinc = t === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * t) / (Math.PI * t);
    const r = (2 * n) / (length - 1) - 1;
    h[n] = sinc * (besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / i0beta);
  }
  const phases: Float64Array[] = [];
  for (let p = 0; p < up; p++) {
    const ph = new Float64Array(tapsPerPhase);
    for (let j = 0; j < tapsPerPhase; j++) ph[j] = up * h[p + j * up]!;
    phases.push(ph);
  }
  return { up, down, tapsPerPhase, phases };
}

/**
 * Filter tables are pure functions of the rate pair and cost milliseconds to build for odd ratios
 * (22.05 kHz); this memo holds derived constants only, never per-call state.
 */
const filterMemo = new Map<string, PolyphaseFilter>();

function filterFor(inRate: number, outRate: number): PolyphaseFilter {
  const key = `${inRate}:${outRate}`;
  let f = filterMemo.get(key);
  if (!f) {
    f = designFilter(inRate, outRate);
    filterMemo.set(key, f);
  }
  return f;
}

/** Streaming resampler for one direction of one call: keeps filter history between frames. */
export class Resampler {
  readonly inRate: number;
  readonly outRate: number;
  private readonly filter: PolyphaseFilter;
  /** Filter history (first tapsPerPhase-1 samples) followed by the current input; reused per frame. */
  private work: Float64Array;
  /** Position of the next output sample in the virtual upsampled timeline, relative to the chunk start. */
  private t = 0;

  constructor(inRate: number, outRate: number) {
    if (!Number.isInteger(inRate) || !Number.isInteger(outRate) || inRate <= 0 || outRate <= 0) {
      throw new RangeError(`invalid resampler rates ${inRate} → ${outRate}`);
    }
    this.inRate = inRate;
    this.outRate = outRate;
    this.filter = filterFor(inRate, outRate);
    this.work = new Float64Array(this.filter.tapsPerPhase - 1);
  }

  /** Samples of delay the filter adds, in output samples (for aligning measurements). */
  get delayOutSamples(): number {
    const { up, tapsPerPhase } = this.filter;
    return Math.round((((tapsPerPhase * up - 1) / 2) * this.outRate) / (this.inRate * up));
  }

  process(input: Int16Array): Int16Array {
    const { up, down, tapsPerPhase, phases } = this.filter;
    const hist = tapsPerPhase - 1;
    if (this.work.length < hist + input.length) {
      const grown = new Float64Array(hist + input.length);
      grown.set(this.work.subarray(0, hist));
      this.work = grown;
    }
    const x = this.work;
    for (let i = 0; i < input.length; i++) x[hist + i] = input[i]!;
    const limit = input.length * up;
    const outCount = Math.max(0, Math.ceil((limit - this.t) / down));
    const out = new Int16Array(outCount);
    let t = this.t;
    for (let k = 0; k < outCount; k++) {
      const n = Math.floor(t / up);
      const coeffs = phases[t - n * up]!;
      const base = n + hist;
      let acc = 0;
      for (let j = 0; j < tapsPerPhase; j++) acc += coeffs[j]! * x[base - j]!;
      out[k] = acc > 32767 ? 32767 : acc < -32768 ? -32768 : Math.round(acc);
      t += down;
    }
    this.t = t - limit;
    x.copyWithin(0, input.length, input.length + hist); // keep the newest samples as history
    return out;
  }
}
