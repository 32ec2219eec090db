import { describe, expect, it } from 'vitest';
import { JitterBuffer, type ReceivedPacket } from '../../src/core/jitter-buffer.js';

/** Concealment frames are marked 0x80 + run length so the tests can see them (G.711 fading is tested in audio.test). */
const conceal = (_last: Buffer | undefined, n: number) => Buffer.alloc(160, 0x80 + n);
const frame = (n: number) => Buffer.alloc(160, n & 0x7f);
const pkt = (seq: number, arrivalMs = seq * 20): ReceivedPacket => ({
  seq: seq & 0xffff,
  timestamp: (seq * 160) >>> 0,
  payload: frame(seq),
  arrivalMs,
});

function jb(minDepthMs = 20, maxDepthMs = 120) {
  return new JitterBuffer({ clockRate: 8000, conceal, minDepthMs, maxDepthMs });
}

/** The marker byte of each popped frame (seq & 0x7f), or 'C' for concealment / '-' for nothing. */
function drain(b: JitterBuffer, n: number): (number | string)[] {
  const out: (number | string)[] = [];
  for (let i = 0; i < n; i++) {
    const f = b.pop();
    out.push(f === null ? '-' : f.every((x) => x === f[0]) && f[0]! < 0x80 ? f[0]! : 'C');
  }
  return out;
}

describe('JitterBuffer', () => {
  it('puts reordered packets back in sequence', () => {
    const b = jb(60);
    for (const s of [1, 3, 2, 5, 4, 6]) b.push(pkt(s));
    expect(drain(b, 6)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(b.stats.reordered).toBe(2);
    expect(b.stats.lost).toBe(0);
  });

  it('drops duplicates and counts them', () => {
    const b = jb();
    for (const s of [1, 2, 2, 3, 3, 3]) b.push(pkt(s));
    expect(drain(b, 3)).toEqual([1, 2, 3]);
    expect(b.stats.duplicate).toBe(3);
  });

  it('conceals a lost packet with a faded copy and carries on', () => {
    const b = jb();
    for (const s of [1, 2, 4, 5]) b.push(pkt(s));
    const out = drain(b, 4);
    expect(out).toEqual([1, 2, 'C', 4]);
    expect(b.stats.lost).toBe(1);
    expect(b.stats.concealed).toBe(1);
  });

  it('drops a packet that arrives after its slot was played, and counts it late', () => {
    const b = jb();
    for (const s of [1, 2, 4]) b.push(pkt(s));
    drain(b, 3); // 1, 2, concealed 3
    b.push(pkt(3, 200));
    expect(b.stats.late).toBe(1);
    expect(drain(b, 1)).toEqual([4]);
  });

  it('handles the 16-bit sequence wrap', () => {
    const b = jb();
    for (const s of [65534, 65535, 65536, 65537]) b.push(pkt(s));
    const out = drain(b, 4);
    expect(out).toEqual([65534 & 0x7f, 65535 & 0x7f, 0, 1]);
    expect(b.stats.lost + b.stats.late).toBe(0);
  });

  it('waits for its depth before playing, then deepens after an underrun', () => {
    const b = jb(40, 120);
    b.push(pkt(1));
    expect(b.pop()).toBeNull(); // only 20 ms buffered, target 40
    b.push(pkt(2));
    expect(drain(b, 2)).toEqual([1, 2]);
    const before = b.targetFrames;
    expect(drain(b, 1)).toEqual(['C']); // underrun
    expect(b.stats.underruns).toBe(1);
    expect(b.targetFrames).toBe(before + 1);
  });

  it('adapts its depth to measured jitter, bounded by 20–120 ms', () => {
    const calm = jb();
    for (let s = 0; s < 200; s++) calm.push(pkt(s, s * 20 + (s % 2)));
    expect(calm.targetFrames * 20).toBeLessThanOrEqual(40);
    const rough = jb();
    for (let s = 0; s < 200; s++) rough.push(pkt(s, s * 20 + (s % 2 ? 30 : 0)));
    expect(rough.stats.jitterMs).toBeGreaterThan(15);
    expect(rough.targetFrames * 20).toBeGreaterThan(40);
    const wild = jb();
    for (let s = 0; s < 200; s++) wild.push(pkt(s, s * 20 + (s % 2 ? 400 : 0)));
    expect(wild.targetFrames * 20).toBe(120);
  });

  it('stops concealing after a pause and resumes cleanly on a sequence jump', () => {
    const b = jb();
    for (const s of [1, 2]) b.push(pkt(s));
    const out = drain(b, 10);
    expect(out.filter((x) => x === 'C').length).toBe(5);
    expect(out.slice(-3)).toEqual(['-', '-', '-']);
    for (const s of [500, 501, 502]) b.push(pkt(s, 10_000 + s));
    expect(drain(b, 3)).toEqual([500 & 0x7f, 501 & 0x7f, 502 & 0x7f]);
  });
});

describe('JitterBuffer under a hostile sender', () => {
  it('stays bounded when a latched sender skips sequence numbers in small steps', () => {
    const b = jb();
    let seq = 1000;
    for (let i = 0; i < 20_000; i++) {
      seq += 90; // below the resync gap, so every packet is "the same stream"
      b.push(pkt(seq, i));
      if (i % 50 === 0) b.pop();
    }
    // Held audio never exceeds its capacity (1 s = 50 frames), whatever the sender does.
    expect(b.bufferedFrames).toBeLessThanOrEqual(50);
    expect((b as unknown as { frames: Map<number, Buffer> }).frames.size).toBeLessThanOrEqual(50);
    expect(b.stats.dropped).toBeGreaterThan(19_000);
  });

  it('ensureDepthMs: 60 ms packets are buffered at least one packet deep before playing', () => {
    const b = jb();
    b.ensureDepthMs(60);
    expect(b.targetFrames).toBe(3);
    b.push(pkt(1));
    b.push(pkt(2));
    expect(b.pop()).toBeNull();
    b.push(pkt(3));
    expect(drain(b, 3)).toEqual([1, 2, 3]);
  });
});
