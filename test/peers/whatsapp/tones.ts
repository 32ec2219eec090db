import { expect } from 'vitest';
import { dominantFrequency, loudestToneDb, tone } from '../../support/audio.js';

/** A continuous tone for the user peer's `startSending`, phase-continuous across 20 ms frames at 48 kHz. */
export const toneSource =
  (freq: number) =>
  (i: number): Int16Array =>
    tone(freq, 48000, 20, 8000, (2 * Math.PI * freq * i * 960) / 48000);

/** At least `minSamples` of audio whose strongest tone is `hz` (within 2 %) at `minDb` or louder. */
export function expectTone(pcm: Int16Array, rate: number, hz: number, o: { minSamples: number; minDb: number }): void {
  expect(pcm.length).toBeGreaterThan(o.minSamples);
  expect(Math.abs(dominantFrequency(pcm, rate) - hz) / hz).toBeLessThan(0.02);
  expect(loudestToneDb(pcm, rate, hz)).toBeGreaterThan(o.minDb);
}
