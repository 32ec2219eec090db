import { describe, expect, it } from 'vitest';
import { FrameClock, type TimerHost } from '../../src/core/frame-clock.js';
import { PlayoutBuffer } from '../../src/core/playout.js';

/** A fake clock: time only moves when the test says so; timers fire in due order. */
class FakeTimers implements TimerHost {
  t = 0;
  private timers: { due: number; fn: () => void; id: number }[] = [];
  private next = 1;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.push({ due: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  /** Advance time, firing timers; `lag` makes every timer fire that many ms late. */
  advance(ms: number, lag = 0): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.due - b.due);
      const t = this.timers[0];
      if (!t || t.due + lag > end) break;
      this.timers.shift();
      this.t = Math.max(this.t, t.due + lag);
      t.fn();
    }
    this.t = end;
  }
}

describe('FrameClock', () => {
  it('ticks exactly every 20 ms with no drift over a minute', () => {
    const timers = new FakeTimers();
    const clock = new FrameClock(timers);
    const at: number[] = [];
    clock.subscribe(() => at.push(timers.now()));
    timers.advance(60_000);
    expect(at.length).toBe(3000);
    expect(at[2999]).toBe(60_000);
  });

  it('does not accumulate timer lateness (each tick is scheduled against absolute time)', () => {
    const timers = new FakeTimers();
    const clock = new FrameClock(timers);
    let n = 0;
    clock.subscribe(() => n++);
    timers.advance(10_000, 3); // every timer fires 3 ms late
    expect(n).toBeGreaterThanOrEqual(499);
    expect(clock.stats.late).toBe(0);
  });

  it('after a long stall catches up at most 3 frames and counts the rest as skipped', () => {
    const timers = new FakeTimers();
    const clock = new FrameClock(timers);
    let n = 0;
    clock.subscribe(() => n++);
    timers.advance(20);
    expect(n).toBe(1);
    timers.advance(200, 180); // the event loop was blocked ~180 ms
    // The timer due at 25 ms fires at 205 ms: 37 slots behind. Only the last 3 frames (12 slots) are
    // caught up, so the listener runs 3 more times (n = 4), and the 25 slots dropped are 6 whole frames.
    expect(n).toBe(4);
    expect(clock.stats.skipped).toBe(6);
  });

  it('stops its timer when the last subscriber leaves', () => {
    const timers = new FakeTimers();
    const clock = new FrameClock(timers);
    let n = 0;
    const off = clock.subscribe(() => n++);
    timers.advance(100);
    off();
    timers.advance(100);
    expect(n).toBe(5);
  });
});

describe('PlayoutBuffer', () => {
  it('re-chunks bursts into exact frames and pads the tail with silence', () => {
    const p = new PlayoutBuffer(160, 8);
    p.push(Buffer.alloc(400, 1), 'item1');
    const f1 = p.pull(0xff)!;
    const f2 = p.pull(0xff)!;
    const f3 = p.pull(0xff)!;
    expect([f1.length, f2.length, f3.length]).toEqual([160, 160, 160]);
    expect(f3.subarray(0, 80).every((b) => b === 1)).toBe(true);
    expect(f3.subarray(80).every((b) => b === 0xff)).toBe(true);
    expect(p.pull()).toBeNull();
  });

  it('while a reply streams, a partial frame waits for the rest instead of being padded', () => {
    const p = new PlayoutBuffer(160, 8, () => 0);
    p.streaming = true;
    p.push(Buffer.alloc(401, 1), 'item1'); // 50 ms: above the 40 ms prebuffer target
    expect(p.pull(0xff)).toHaveLength(160);
    expect(p.pull(0xff)).toHaveLength(160);
    expect(p.pull(0xff)).toBeNull(); // 81 bytes left: an underrun, not a padded frame
    expect(p.stats).toEqual({ underruns: 1, holeFrames: 1, prebufferFrames: 0 });
    p.streaming = false; // the reply is done: its tail plays at once, padded
    const tail = p.pull(0xff)!;
    expect(tail.subarray(0, 81).every((b) => b === 1)).toBe(true);
    expect(tail.subarray(81).every((b) => b === 0xff)).toBe(true);
    expect(p.pull(0xff)).toBeNull();
  });

  it('a model streaming at 0.9x real time in odd chunks: one refill pause, then a learned target with none', () => {
    // Simulated time: one pull per 20 ms tick; the model generates 0.9 ms of audio per ms (7.2 bytes/ms
    // of µ-law) and delivers it in odd-sized chunks of 57-1001 bytes.
    let now = 0;
    const p = new PlayoutBuffer(160, 8, () => now);
    const sizes = [57, 1001, 333, 91, 777, 129, 455, 1001, 73, 601];
    const runReply = (totalBytes: number) => {
      p.streaming = true;
      let generated = 0;
      let delivered = 0;
      let k = 0;
      let audioFrames = 0;
      let holes = 0;
      let started = false;
      let inHole = false;
      for (; delivered < totalBytes || !p.empty; now += 20) {
        generated = Math.min(totalBytes, generated + 20 * 7.2);
        const size = sizes[k % sizes.length]!;
        while (delivered < totalBytes && generated - delivered >= Math.min(size, totalBytes - delivered)) {
          const n = Math.min(size, totalBytes - delivered);
          p.push(Buffer.alloc(n, 1), 'r');
          delivered += n;
          k++;
        }
        if (delivered >= totalBytes) p.streaming = false;
        const f = p.pull(0xff);
        if (f) {
          expect(f.every((b) => b === 1) || !p.streaming).toBe(true); // never padded mid-reply
          audioFrames++;
          started = true;
          inHole = false;
        } else if (started && delivered < totalBytes && !inHole) {
          holes++;
          inHole = true;
        }
      }
      return { audioFrames, holes };
    };
    const first = runReply(40_000); // 5 s of audio
    expect(first.audioFrames).toBe(250);
    expect(first.holes).toBe(1);
    expect(p.stats.underruns).toBe(1);
    // The rate measured at the underrun (~0.9) set the target to cover the next 6 s: the cap, 640 ms.
    expect(p.targetMs).toBe(640);
    const second = runReply(40_000);
    expect(second).toEqual({ audioFrames: 250, holes: 0 });
    expect(p.stats.underruns).toBe(1);
    // A reply without an underrun relaxes the target toward the base (less added latency next time).
    expect(p.targetMs).toBe(480);
  });

  it('a fast model pays no prebuffer: its first delta already covers the 40 ms target', () => {
    const p = new PlayoutBuffer(160, 8, () => 0);
    p.streaming = true;
    p.push(Buffer.alloc(800, 1), 'r'); // one 100 ms delta
    expect(p.pull(0xff)).toHaveLength(160);
    expect(p.stats.prebufferFrames).toBe(0);
  });

  it('clears at once and reports how much of the item was played', () => {
    const p = new PlayoutBuffer(160, 8);
    p.push(Buffer.alloc(8000, 1), 'item1'); // 1 s
    for (let i = 0; i < 10; i++) p.pull();
    expect(p.bufferedMs).toBe(800);
    const mark = p.clear();
    expect(mark).toEqual({ itemId: 'item1', playedMs: 200 });
    expect(p.empty).toBe(true);
    expect(p.pull()).toBeNull();
  });
});
