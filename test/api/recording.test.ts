import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import { dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { simulatedCall, sleep, startTestGateway, waitFor } from '../support/gateway.js';

describe('call recording', () => {
  it('writes a stereo WAV: caller on the left, AI on the right', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-rec-'));
    const gw = await startTestGateway({ records: { path: ':memory:', recordAudio: true, recordingsDir: dir } });
    try {
      const { call, leg } = await simulatedCall(gw);
      const pcmu = createCodec(PCMU_8K);
      await waitFor(() => call.media!.bridge.playout.empty && call.transcript.length > 0, 10_000, 'greeting');
      await sleep(200);
      leg.feed(frames(tone(1000, 8000, 400, 8000), 160).map((f) => pcmu.encode(f)));
      await sleep(500);
      await call.end({ by: 'remote', cause: 'bye' });
      const wav = readFileSync(join(dir, `${call.id}.wav`));
      expect(wav.toString('ascii', 0, 4)).toBe('RIFF');
      expect(wav.readUInt16LE(22)).toBe(2);
      const rate = wav.readUInt32LE(24);
      expect(rate).toBe(8000);
      expect(wav.readUInt32LE(40)).toBe(wav.length - 44);
      const samples = new Int16Array(wav.buffer.slice(wav.byteOffset + 44, wav.byteOffset + wav.length));
      const left = samples.filter((_, i) => i % 2 === 0);
      const right = samples.filter((_, i) => i % 2 === 1);
      // Left: the caller's 1 kHz tone (the loudest stretch); right: the greeting speech.
      const loudLeft = frames(left, 160).filter((f) => dbfsOf(f) > -30);
      expect(loudLeft.length).toBeGreaterThanOrEqual(15);
      expect(Math.abs(dominantFrequency(Int16Array.from(loudLeft.flatMap((f) => [...f])), rate) - 1000)).toBeLessThan(
        20,
      );
      expect(dbfsOf(right)).toBeGreaterThan(-45);
    } finally {
      await gw.stop('test_done', 0);
    }
  });
});
