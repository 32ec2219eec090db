import { afterEach, describe, expect, it, vi } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { l16, OPUS_48K, PCMA_8K } from '../../src/core/audio/format.js';
import { Call } from '../../src/core/call.js';
import { FrameClock } from '../../src/core/frame-clock.js';
import { KeypadCollector } from '../../src/core/keypad.js';
import { LegBridge } from '../../src/core/leg-bridge.js';
import { feedListener } from '../../src/core/listen-in.js';
import { testLogger } from '../../src/core/logger.js';
import { concat, dominantFrequency, frames, tone } from '../support/audio.js';
import { MemoryLeg } from '../support/memory-leg.js';

const log = testLogger();
const KEYPAD = { mode: 'text' as const, interDigitTimeoutMs: 3000, terminator: '#' as const, maxDigits: 32 };

afterEach(() => vi.useRealTimers());

describe('KeypadCollector', () => {
  it('1 2 3 # is one input "123"; the terminator is not passed on', () => {
    const got: string[] = [];
    const k = new KeypadCollector(KEYPAD, (d) => got.push(d), log);
    for (const d of '123#') k.press(d);
    expect(got).toEqual(['123']);
    k.stop();
  });

  it('a pause of interDigitTimeoutMs ends the input; a lone terminator is still an answer', () => {
    vi.useFakeTimers();
    const got: string[] = [];
    const k = new KeypadCollector(KEYPAD, (d) => got.push(d), log);
    k.press('4');
    vi.advanceTimersByTime(2999);
    k.press('2'); // restarts the timer
    vi.advanceTimersByTime(2999);
    expect(got).toEqual([]);
    vi.advanceTimersByTime(2);
    expect(got).toEqual(['42']);
    k.press('#');
    expect(got).toEqual(['42', '#']);
    k.stop();
  });

  it('hostile: a flood of digits is cut into maxDigits pieces, junk is ignored, nothing after stop()', () => {
    vi.useFakeTimers();
    const got: string[] = [];
    const k = new KeypadCollector({ ...KEYPAD, maxDigits: 8 }, (d) => got.push(d), log);
    for (let i = 0; i < 20; i++) k.press(String(i % 10));
    k.press('x');
    k.press('12');
    k.press('');
    expect(got).toEqual(['01234567', '89012345']);
    k.stop();
    vi.advanceTimersByTime(10_000);
    k.press('9');
    expect(got).toHaveLength(2);
  });
});

describe('LegBridge', () => {
  const pcma = createCodec(PCMA_8K);

  it('G.711 ⇄ same G.711 is passthrough: the bytes arrive untouched, silence fills gaps both ways', () => {
    const call = new Call({ front: 'test', from: 'a', to: 'b' }, log);
    const a = new MemoryLeg('a', PCMA_8K);
    const b = new MemoryLeg('b', PCMA_8K);
    const lb = new LegBridge(call, a, b, new FrameClock());
    expect(lb.passthrough).toBe(true);
    const sent = frames(tone(700, 8000, 100), 160).map((f) => pcma.encode(f));
    a.feed(sent);
    for (let i = 0; i < 6; i++) lb.tick();
    expect(b.written.slice(0, 5)).toEqual(sent);
    expect(b.written[5]).toEqual(pcma.silence());
    expect(a.written).toHaveLength(6); // b had nothing: a got 20 ms of silence every tick
    expect(lb.stats).toMatchObject({ aToB: 5, silenceToB: 1, bToA: 0, silenceToA: 6 });
  });

  it('Opus 48 kHz ⇄ PCMA is transcoded both ways with the tone intact', () => {
    const call = new Call({ front: 'test', from: 'a', to: 'b' }, log);
    const opusEnc = createCodec(OPUS_48K, 48000);
    const opusDec = createCodec(OPUS_48K, 48000);
    const wa = new MemoryLeg('wa', OPUS_48K);
    const sip = new MemoryLeg('sip', PCMA_8K);
    const lb = new LegBridge(call, wa, sip, new FrameClock());
    expect(lb.passthrough).toBe(false);
    wa.feed(frames(tone(500, 48000, 1000), 960).map((f) => opusEnc.encode(f)));
    sip.feed(frames(tone(1300, 8000, 1000), 160).map((f) => pcma.encode(f)));
    for (let i = 0; i < 50; i++) lb.tick();
    const atSip = concat(sip.written.slice(10).map((f) => pcma.decode(f)));
    const atWa = concat(wa.written.slice(10).map((f) => opusDec.decode(f)));
    expect(Math.abs(dominantFrequency(atSip, 8000) - 500)).toBeLessThan(10);
    expect(Math.abs(dominantFrequency(atWa, 48000) - 1300)).toBeLessThan(15);
  });

  it('a leg that throws is counted and skipped; the other direction carries on', () => {
    const call = new Call({ front: 'test', from: 'a', to: 'b' }, log);
    const wa = new MemoryLeg('wa', OPUS_48K);
    const sip = new MemoryLeg('sip', PCMA_8K);
    wa.readFrame = () => {
      throw new Error('SRTP unprotect failed');
    };
    const lb = new LegBridge(call, wa, sip, new FrameClock());
    sip.feed([pcma.encode(tone(1300, 8000, 20)), pcma.encode(tone(1300, 8000, 20))]);
    lb.tick();
    lb.tick();
    expect(lb.stats.badFrames).toBe(2);
    expect(lb.stats.bToA).toBe(2);
    expect(wa.written).toHaveLength(2);
    expect(sip.written).toHaveLength(0);
  });
});

describe('LegBridge taps', () => {
  it('hostile: a tap that throws is counted and skipped; both directions and the other taps carry on', () => {
    const pcma = createCodec(PCMA_8K);
    const call = new Call({ front: 'test', from: 'a', to: 'b' }, log);
    const a = new MemoryLeg('a', PCMA_8K);
    const b = new MemoryLeg('b', PCMA_8K);
    const lb = new LegBridge(call, a, b, new FrameClock());
    lb.addTap(() => {
      throw new Error('listener leg gone');
    });
    const heard: (Int16Array | null)[][] = [];
    const untap = lb.addTap((caller, other) => heard.push([caller, other]));
    a.feed([pcma.encode(tone(700, 8000, 20)), pcma.encode(tone(700, 8000, 20))]);
    lb.tick();
    lb.tick();
    untap();
    lb.tick();
    expect(lb.stats).toMatchObject({ aToB: 2, badFrames: 3 });
    expect(b.written).toHaveLength(3);
    expect(heard).toHaveLength(2);
    expect(heard[0]![0]).toHaveLength(160);
    expect(heard[0]![1]).toBeNull(); // b had nothing: null, not silence
  });
});

describe('listen-in follows the call across a bridged transfer', () => {
  it('the listener hears the caller and the AI-side tone, then the caller and the person once the bridge changes', () => {
    const pcma = createCodec(PCMA_8K);
    const opusEnc = createCodec(OPUS_48K, 48000);
    const call = new Call({ front: 'test', from: 'a', to: 'b' }, log);
    // Before: a G.711 caller and a G.711 "desk" on the call's first bridge (it stands in for the AI).
    const caller = new MemoryLeg('caller', PCMA_8K);
    const desk = new MemoryLeg('desk', PCMA_8K);
    const first = new LegBridge(call, caller, desk, new FrameClock());
    call.setTapSource(first);
    // The listener's leg is 16 kHz L16 (rate 24 kHz mix, as an AI bridge would give) to show resampling.
    const listener = new MemoryLeg('listener', l16(16000));
    const l16Codec = createCodec(l16(16000));
    const stop = feedListener(call, 24000, listener, call.id);
    desk.feed(frames(tone(600, 8000, 400), 160).map((f) => pcma.encode(f)));
    for (let i = 0; i < 20; i++) first.tick();
    // After: a WhatsApp (Opus) person on a LegBridge; the old bridge stops ticking.
    const person = new MemoryLeg('person', OPUS_48K);
    const second = new LegBridge(call, caller, person, new FrameClock());
    expect(second.tapRates).toEqual({ caller: 8000, other: 16000 });
    call.setTapSource(second);
    person.feed(frames(tone(1500, 48000, 600), 960).map((f) => opusEnc.encode(f)));
    for (let i = 0; i < 30; i++) second.tick();
    first.tick(); // a stale bridge no longer feeds the listener
    expect(listener.written).toHaveLength(50);
    const heard = (from: number, to: number) => concat(listener.written.slice(from, to).map((f) => l16Codec.decode(f)));
    expect(Math.abs(dominantFrequency(heard(5, 20), 16000) - 600)).toBeLessThan(15);
    expect(Math.abs(dominantFrequency(heard(30, 50), 16000) - 1500)).toBeLessThan(15);
    stop();
    second.tick();
    expect(listener.written).toHaveLength(50);
    expect(call.listenerCount('tap_source')).toBe(0);
  });
});

describe('which destinations a REFER can carry', () => {
  it('numbers and sip:/sips:/tel: URIs go by REFER; any other scheme (whatsapp:, http:) is bridged', async () => {
    const { referable } = await import('../../src/core/handoff.js');
    for (const d of ['+250788123456', 'sip:desk@pbx.example', 'SIPS:desk@pbx.example', 'tel:+35621000000'])
      expect(referable(d), d).toBe(true);
    for (const d of ['whatsapp:+250788123456', 'http://evil.example/', 'mailto:a@b', 'data:text/plain,x'])
      expect(referable(d), d).toBe(false);
  });
});
