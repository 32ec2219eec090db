import { tone } from '../../support/audio.js';

/** A continuous tone for the user peer's `startSending`, phase-continuous across 20 ms frames at 48 kHz. */
export const toneSource =
  (freq: number) =>
  (i: number): Int16Array =>
    tone(freq, 48000, 20, 8000, (2 * Math.PI * freq * i * 960) / 48000);
