import { describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { createConverter } from '../../src/core/audio/converter.js';
import { type AudioFormat, l16, OPUS_48K, PCMA_8K, PCMU_8K, samplesPerFrame } from '../../src/core/audio/format.js';
import { pcmBuffer } from '../../src/core/audio/level.js';
import { Resampler } from '../../src/core/audio/resampler.js';
import { GatewayError } from '../../src/core/errors.js';
import { speak } from '../../src/ai/local/tts.js';
import {
  borderStepRatio,
  concat,
  dominantFrequency,
  frames,
  segmentalSnrDb,
  toneSinadDb,
  toPcm,
  tone,
  toneLevelDb,
} from '../support/audio.js';

/** Run PCM at `rate` through A → B → A (as the bridge does, frame by frame) and return PCM at `rate`. */
function roundTrip(pcm: Int16Array, rate: number, via: AudioFormat): Int16Array {
  const src = l16(rate);
  const there = createConverter(src, via);
  const back = createConverter(via, src);
  const out = frames(pcm, samplesPerFrame(src)).map((f) => toPcm(back.convert(there.convert(pcmBuffer(f)))));
  return concat(out);
}

function resampleAll(pcm: Int16Array, from: number, to: number): Int16Array {
  const r = new Resampler(from, to);
  return concat(frames(pcm, from / 50).map((f) => r.process(f)));
}

describe('codecs and converters, measured', () => {
  // Thresholds and measured values: docs/audio-quality.md (SINAD of a -12 dBFS 1 kHz tone after
  // the round trip; speech graded by segmental SNR). Each threshold sits ~7-15 dB under what we measure.
  const cases: { name: string; rate: number; via: AudioFormat; minSnr: number }[] = [
    { name: 'PCMU 8k', rate: 8000, via: PCMU_8K, minSnr: 40 },
    { name: 'PCMA 8k', rate: 8000, via: PCMA_8K, minSnr: 38 },
    { name: 'PCMU from 24k', rate: 24000, via: PCMU_8K, minSnr: 33 },
    { name: 'Opus 48k from 24k', rate: 24000, via: OPUS_48K, minSnr: 25 },
    { name: 'L16 16k from 24k', rate: 24000, via: l16(16000), minSnr: 60 },
    { name: 'L16 48k from 24k', rate: 24000, via: l16(48000), minSnr: 60 },
  ];
  for (const c of cases) {
    it(`1 kHz tone survives ${c.name}: frequency ±2 %, level, SINAD ≥ ${c.minSnr} dB, no border clicks`, () => {
      const input = tone(1000, c.rate, 1000, 8000);
      const out = roundTrip(input, c.rate, c.via);
      const settled = out.subarray(c.rate / 10); // skip filter/codec start-up
      expect(Math.abs(dominantFrequency(settled, c.rate) - 1000)).toBeLessThan(20);
      expect(Math.abs(toneLevelDb(settled, c.rate, 1000) - toneLevelDb(input, c.rate, 1000))).toBeLessThan(1.5);
      expect(toneSinadDb(settled, c.rate, 1000)).toBeGreaterThan(c.minSnr);
      expect(borderStepRatio(out, samplesPerFrame(l16(c.rate)), 5)).toBeLessThan(1.3);
    });
  }

  it('espeak-ng speech survives G.711 and Opus with documented segmental SNR', async () => {
    const speech = await speak('The quick brown fox jumps over the lazy dog.', 24000);
    expect(speech.length).toBeGreaterThan(24000);
    const whole = speech.subarray(0, Math.floor(speech.length / 480) * 480);
    const viaG711 = roundTrip(resampleAll(whole, 24000, 8000), 8000, PCMU_8K);
    const ref8k = resampleAll(whole, 24000, 8000);
    expect(segmentalSnrDb(ref8k, viaG711, 160, 50)).toBeGreaterThan(25);
    const viaOpus = roundTrip(whole, 24000, OPUS_48K);
    expect(segmentalSnrDb(whole, viaOpus, 480, 1000)).toBeGreaterThan(8);
  });

  it('resampler passes in-band tones at every supported rate pair', () => {
    const rates = [8000, 16000, 24000, 48000];
    for (const from of rates) {
      for (const to of rates) {
        if (from === to) continue;
        const out = resampleAll(tone(1000, from, 500), from, to);
        expect(out.length).toBe(to / 2);
        expect(Math.abs(dominantFrequency(out.subarray(to / 10), to) - 1000)).toBeLessThan(20);
        expect(
          Math.abs(toneLevelDb(out.subarray(to / 10), to, 1000) - toneLevelDb(tone(1000, from, 500), from, 1000)),
        ).toBeLessThan(0.5);
      }
    }
  });

  it('a 6 kHz tone down-sampled to 8 kHz is attenuated by ≥ 40 dB (no aliasing)', () => {
    for (const from of [16000, 24000, 48000]) {
      const input = tone(6000, from, 500, 16000);
      const out = resampleAll(input, from, 8000).subarray(800);
      // 6 kHz would alias to 2 kHz at 8 kHz: measure there and overall.
      const alias = toneLevelDb(out, 8000, 2000);
      const ref = toneLevelDb(input, from, 6000);
      expect(ref - alias).toBeGreaterThanOrEqual(40);
    }
  });

  it('conversion is skipped when formats match', () => {
    expect(createConverter(PCMU_8K, PCMU_8K).passthrough).toBe(true);
    expect(createConverter(PCMU_8K, PCMA_8K).passthrough).toBe(false);
  });

  it('wrong-sized frames and unknown codecs are typed errors carrying the call id', () => {
    const conv = createConverter(PCMU_8K, l16(24000), 'call-7');
    expect(() => conv.convert(Buffer.alloc(100))).toThrowError(GatewayError);
    try {
      conv.convert(Buffer.alloc(100));
    } catch (err) {
      expect((err as GatewayError).code).toBe('bad_frame');
      expect((err as GatewayError).callId).toBe('call-7');
    }
    expect(() => createCodec({ codec: 'gsm' as never, sampleRate: 8000, channels: 1 }, 8000, 'c')).toThrowError(
      /unknown codec/,
    );
    const opus = createConverter(OPUS_48K, l16(24000), 'call-8');
    expect(() => opus.convert(Buffer.from([0xff, 0xff, 0xff, 0x01, 0x02]))).toThrowError(GatewayError);
  });

  it('G.711 concealment fades a repeated frame; Opus repeats once then goes silent', () => {
    const g = createCodec(PCMU_8K);
    const last = g.encode(tone(1000, 8000, 20, 8000));
    const first = toneLevelDb(g.decode(g.conceal(last, 1)), 8000, 1000);
    const third = toneLevelDb(g.decode(g.conceal(last, 3)), 8000, 1000);
    expect(first - third).toBeGreaterThan(10);
    const o = createCodec(OPUS_48K, 24000);
    const pkt = o.encode(tone(1000, 24000, 20));
    expect(o.conceal(pkt, 1)).toBe(pkt);
    expect(o.conceal(pkt, 2)).toEqual(o.silence());
  });
});
