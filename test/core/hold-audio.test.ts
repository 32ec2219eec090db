import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { parseHoldWav } from '../../src/core/audio/hold-audio.js';
import { toneWav, wavBytes } from '../support/wav.js';

const dir = mkdtempSync(join(tmpdir(), 'hold-audio-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, bytes: Buffer | string): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** A config whose route plays `holdAudio` while the person rings. */
function withHoldAudio(holdAudio: string) {
  return parseConfig({ routes: { local: { kind: 'local', transfer: { mode: 'bridge', holdAudio } } } }, {});
}

describe('transfer.holdAudio', () => {
  it('accepts mono 16-bit PCM at 8/16/24/48 kHz; extra chunks (LIST) are skipped', () => {
    for (const rate of [8000, 16000, 24000, 48000]) {
      const path = file(`ok-${rate}.wav`, toneWav(700, rate, 1000));
      expect(withHoldAudio(path).routes.local!.transfer.holdAudio).toBe(path);
    }
    // A LIST chunk before the data (what audio editors write) is skipped.
    const plain = toneWav(700, 16000, 100);
    const list = Buffer.concat([Buffer.from('LIST'), Buffer.from([4, 0, 0, 0]), Buffer.from('INFO')]);
    const withList = Buffer.concat([plain.subarray(0, 36), list, plain.subarray(36)]);
    expect(parseHoldWav(withList).samples.length).toBe(1600);
  });

  it('refuses, at config load, every file that would not play, naming the key, the file and the fault', () => {
    const tone = new Int16Array(16000).fill(1000);
    const cases: [string, Buffer | string, RegExp][] = [
      ['text.wav', 'hello, not audio', /not a WAV file/],
      ['stereo.wav', wavBytes(tone, { rate: 16000, channels: 2 }), /2 channels, need mono/],
      ['cd.wav', wavBytes(tone, { rate: 44100 }), /44100 Hz, need one of 8000, 16000, 24000, 48000 Hz/],
      ['8bit.wav', wavBytes(tone, { rate: 16000, bits: 8 }), /8-bit samples, need 16-bit/],
      ['float.wav', wavBytes(tone, { rate: 16000, tag: 3, bits: 32 }), /not PCM \(format tag 3\)/],
      ['alaw.wav', wavBytes(tone, { rate: 8000, tag: 6 }), /not PCM \(format tag 6\)/],
      ['empty.wav', wavBytes(new Int16Array(0), { rate: 16000 }), /0 samples: at least 20 ms/],
      ['truncated.wav', toneWav(700, 16000, 100).subarray(0, 30), /fmt chunk is truncated/],
      ['nodata.wav', toneWav(700, 16000, 100).subarray(0, 36), /no data chunk/],
    ];
    for (const [name, bytes, why] of cases) {
      const path = file(name, bytes);
      let message = '';
      try {
        withHoldAudio(path);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, name).toMatch(/routes\.local\.transfer\.holdAudio/);
      expect(message, name).toContain(path);
      expect(message, name).toMatch(why);
    }
    expect(() => withHoldAudio(join(dir, 'missing.wav'))).toThrowError(/missing\.wav: no such file/);
  });

  it('a huge data size in the header reads only what the file holds', () => {
    const wav = toneWav(700, 8000, 100);
    wav.writeUInt32LE(0xfffffff0, 40);
    expect(parseHoldWav(wav).samples.length).toBe(800);
  });
});
