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
    expect(clock.stats.skipped).toBeGreaterThan(0);
    expect(n).toBeLessThan(11);
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
