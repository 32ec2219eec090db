import { mkdtempSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import { MemoryLeg } from '../support/memory-leg.js';
import { dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { speak } from '../../src/ai/local/tts.js';
import { speechMatch } from '../support/speech.js';
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
      // The whole tone read by the bridge, then a few more ticks (not a 500 ms guess on a loaded box).
      await waitFor(() => leg.inbound.length === 0, 10_000, 'the tone played into the call');
      const written = leg.written.length;
      await waitFor(() => leg.written.length >= written + 5, 5000, 'five more ticks');
      await call.end({ by: 'remote', cause: 'bye' });
      // The file is finished asynchronously (off the media path): wait for the RIFF sizes.
      const path = join(dir, `${call.id}.wav`);
      await waitFor(() => readFileSync(path).readUInt32LE(40) > 0, 5000, 'WAV header patched');
      const wav = readFileSync(path);
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
      // Right: the greeting's words (loudness envelope against the same text synthesised), not just sound.
      const greeting = await speak('Hello caller.', rate);
      const other = await speak('Please hold the line for an agent.', rate);
      const rightPcm = Int16Array.from(right);
      const same = speechMatch(greeting, rate, rightPcm, rate);
      const notSame = speechMatch(other, rate, rightPcm, rate);
      expect(same, `greeting ${same} vs other words ${notSame}`).toBeGreaterThan(0.7);
      expect(notSame).toBeLessThan(same - 0.2);
    } finally {
      await gw.stop('test_done', 0);
    }
  });

  it('a full disk (ENOSPC) stops the recording, never the call; the file handle is closed; the next call records', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-rec-full-'));
    // Writes to /dev/full fail with a real ENOSPC.
    symlinkSync('/dev/full', join(dir, 'full-call.wav'));
    const gw = await startTestGateway({ records: { path: ':memory:', recordAudio: true, recordingsDir: dir } });
    const openFds = () => readdirSync('/proc/self/fd').length;
    try {
      const fdsBefore = openFds();
      const pcmu = createCodec(PCMU_8K);
      const call = gw.ctx.registry.create({ front: 'test', from: '+250788000001', to: '+250700000000' }, 'full-call');
      const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
      await gw.ctx.connector.connect(call, leg);
      const failures = async () => (await gw.ctx.metrics.recordingFailures.get()).values[0]?.value ?? 0;
      const t0 = Date.now();
      while ((await failures()) < 1 && Date.now() - t0 < 5000) await sleep(20);
      expect(await failures()).toBe(1);
      // The call carries on: the greeting keeps playing and the caller's audio still reaches the AI.
      const written = leg.written.length;
      const toAi = call.media!.bridge.stats.framesToAi;
      leg.feed(frames(tone(1000, 8000, 400, 8000), 160).map((f) => pcmu.encode(f)));
      await waitFor(() => leg.written.length > written + 20, 5000, 'audio still flowing to the caller');
      await waitFor(() => call.media!.bridge.stats.framesToAi > toAi + 10, 5000, 'audio still flowing to the AI');
      expect(call.state).toBe('bridged');
      await call.end({ by: 'remote', cause: 'bye' });
      expect(call.endReason).toMatchObject({ cause: 'bye' });
      await waitFor(() => openFds() <= fdsBefore, 5000, 'recording file handle closed');

      // A new call on the same gateway records normally.
      const next = await simulatedCall(gw);
      await waitFor(() => next.leg.written.length >= 25, 10_000, '0.5 s of the next call');
      await next.call.end({ by: 'remote', cause: 'bye' });
      const path = join(dir, `${next.call.id}.wav`);
      await waitFor(() => readFileSync(path).readUInt32LE(40) > 0, 5000, 'second recording finished');
      expect(await failures()).toBe(1);
    } finally {
      await gw.stop('test_done', 0);
    }
  });

  it('a bridged transfer keeps recording in the same WAV: the person is on the right, the caller on the left', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-rec-xfer-'));
    const gw = await startTestGateway({ records: { path: ':memory:', recordAudio: true, recordingsDir: dir } });
    try {
      const pcmu = createCodec(PCMU_8K);
      // The person answers with a 1300 Hz tone queued on their leg (read once the legs are bridged).
      const person = new MemoryLeg('person', PCMU_8K, pcmu.silence());
      person.feed(frames(tone(1300, 8000, 1000, 8000), 160).map((f) => pcmu.encode(f)));
      gw.ctx.partyDialers.set('memory', {
        handles: (d) => d === 'sip:person@test',
        dialParty: async () => person,
      });
      const { call, leg } = await simulatedCall(gw);
      await waitFor(() => call.media!.bridge.playout.empty && call.transcript.length > 0, 10_000, 'greeting');
      const result = await call.handoff!({ destination: 'sip:person@test', mode: 'bridge', by: 'operator' });
      expect(result).toMatchObject({ ok: true, outcome: 'bridged' });
      expect(call.media).toBeUndefined(); // the AI has left: only the legs' bridge carries audio now
      leg.feed(frames(tone(700, 8000, 1000, 8000), 160).map((f) => pcmu.encode(f)));
      await waitFor(() => person.inbound.length === 0 && leg.inbound.length === 0, 10_000, 'both tones played');
      await sleep(100);
      await call.end({ by: 'remote', cause: 'bye' });
      const path = join(dir, `${call.id}.wav`);
      await waitFor(() => readFileSync(path).readUInt32LE(40) > 0, 5000, 'WAV header patched');
      const wav = readFileSync(path);
      const rate = wav.readUInt32LE(24);
      expect(rate).toBe(8000);
      const samples = new Int16Array(wav.buffer.slice(wav.byteOffset + 44, wav.byteOffset + wav.length));
      const loud = (side: number) =>
        frames(
          samples.filter((_, i) => i % 2 === side),
          160,
        ).filter((f) => dbfsOf(f) > -30);
      // Only the transfer's tones are pure: the greeting and hold prompt are speech, and the tail
      // of the WAV (after the transfer) holds a second of each tone.
      const tail = (side: number) =>
        Int16Array.from(
          loud(side)
            .slice(-40)
            .flatMap((f) => [...f]),
        );
      expect(loud(1).length).toBeGreaterThanOrEqual(40);
      expect(Math.abs(dominantFrequency(tail(1), rate) - 1300)).toBeLessThan(20);
      expect(loud(0).length).toBeGreaterThanOrEqual(40);
      expect(Math.abs(dominantFrequency(tail(0), rate) - 700)).toBeLessThan(20);
    } finally {
      await gw.stop('test_done', 0);
    }
  });
});
