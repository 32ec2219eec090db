import { createConverter } from '../src/core/audio/converter.js';
import {
  type AudioFormat,
  describeFormat,
  l16,
  OPUS_48K,
  PCMA_8K,
  PCMU_8K,
  samplesPerFrame,
} from '../src/core/audio/format.js';
import { pcmBuffer } from '../src/core/audio/level.js';
import { summarize, table, type BenchSection } from './stats.js';

function speechLike(rate: number, frames: number): Int16Array {
  // A chirp plus harmonics: exercises the codecs more like speech than a pure tone does.
  const n = (rate / 50) * frames;
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const f = 150 + 100 * Math.sin(2 * Math.PI * 0.5 * t);
    out[i] = Math.round(
      4000 *
        (Math.sin(2 * Math.PI * f * t) +
          0.5 * Math.sin(4 * Math.PI * f * t) +
          0.3 * Math.sin(6 * Math.PI * f * t * 1.01)),
    );
  }
  return out;
}

/** Encoded 20 ms frames of `format`, from speech-like audio. */
function framesIn(format: AudioFormat, count: number): Buffer[] {
  const rate = format.codec === 'opus' ? 24000 : format.sampleRate;
  const pcm = speechLike(rate, count);
  const conv = createConverter(l16(rate), format);
  const per = samplesPerFrame(l16(rate));
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) out.push(conv.convert(pcmBuffer(pcm.slice(i * per, (i + 1) * per))));
  return out;
}

/** ns per frame for one direction, as percentiles over batches of 50 frames. */
function measure(from: AudioFormat, to: AudioFormat): { p50: number; p99: number; mean: number } {
  const input = framesIn(from, 500);
  const conv = createConverter(from, to);
  for (let w = 0; w < 3; w++) for (const f of input) conv.convert(f); // warm-up (JIT, codec state)
  const perFrame: number[] = [];
  for (let round = 0; round < 20; round++) {
    for (let b = 0; b < input.length; b += 50) {
      const t0 = process.hrtime.bigint();
      for (let i = b; i < b + 50; i++) conv.convert(input[i]!);
      perFrame.push(Number(process.hrtime.bigint() - t0) / 50);
    }
  }
  return summarize(perFrame);
}

const us = (ns: number) => (ns / 1000).toFixed(1);

export function benchCodecPaths(): BenchSection {
  const paths: { name: string; leg: AudioFormat; ai: AudioFormat }[] = [
    { name: 'G.711 passthrough (carrier → Realtime pcmu)', leg: PCMU_8K, ai: PCMU_8K },
    { name: 'G.711 µ-law ⇄ PCM16 24 kHz', leg: PCMU_8K, ai: l16(24000) },
    { name: 'G.711 A-law ⇄ PCM16 24 kHz', leg: PCMA_8K, ai: l16(24000) },
    { name: 'G.711 µ-law ⇄ PCM16 8 kHz (local agent)', leg: PCMU_8K, ai: l16(8000) },
    { name: 'Opus 48 kHz ⇄ PCM16 24 kHz (WhatsApp → Realtime)', leg: OPUS_48K, ai: l16(24000) },
    { name: 'Opus 48 kHz ⇄ G.711 µ-law (WhatsApp → OpenAI SIP)', leg: OPUS_48K, ai: PCMU_8K },
  ];
  const rows = paths.map((p) => {
    const up = measure(p.leg, p.ai);
    const down = measure(p.ai, p.leg);
    const pair = up.p50 + down.p50;
    const callsPerCore = pair > 0 ? Math.floor(20e6 / pair) : Infinity;
    return [
      p.name,
      `${describeFormat(p.leg)} → ${describeFormat(p.ai)}`,
      `${us(up.p50)} / ${us(up.p99)}`,
      `${us(down.p50)} / ${us(down.p99)}`,
      p.leg === p.ai ? '∞ (no work)' : callsPerCore.toLocaleString('en-US'),
    ];
  });
  return {
    title: 'Codec and resampler cost per 20 ms frame',
    body: [
      'One call direction pair = caller frame to the AI + AI frame to the caller. "Calls per core" = 20 ms ÷ (p50 up + p50 down): the',
      'media-conversion ceiling only, before networking. Times in µs, p50 / p99 over 200 batches of 50 frames.',
      '',
      table(['path', 'formats (leg → AI)', 'leg → AI µs', 'AI → leg µs', 'calls per core'], rows),
    ].join('\n'),
  };
}
