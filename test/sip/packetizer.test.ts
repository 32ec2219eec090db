import { describe, expect, it } from 'vitest';
import { comfortNoisePcm, RxReframer, TxPacketizer, type RxFrame } from '../../src/sip/packetizer.js';
import { rmsOf } from '../support/audio.js';

/** A payload whose byte i is (sample index from stream start) & 0xff, so frames show where they came from. */
const ramp = (fromSample: number, bytes: number) =>
  Buffer.from(Array.from({ length: bytes }, (_, i) => (fromSample + i) & 0xff));
const TS0 = 0xfffff000; // near the 32-bit wrap on purpose

function feed(r: RxReframer, ptimeMs: number, packets: number, order?: number[]): RxFrame[] {
  const bytes = ptimeMs * 8;
  const out: RxFrame[] = [];
  for (const k of order ?? [...Array(packets).keys()])
    out.push(...r.push((TS0 + k * bytes) >>> 0, ramp(k * bytes, bytes)));
  return out;
}

const expectContinuous = (frames: RxFrame[], count: number) => {
  expect(frames.map((f) => f.index)).toEqual([...Array(count).keys()]);
  for (const f of frames) {
    expect(f.payload).toEqual(ramp(f.index * 160, 160));
    expect(f.timestamp).toBe((TS0 + f.index * 160) >>> 0);
  }
};

describe('RxReframer: any multiple of 10 ms → 20 ms frames by RTP timestamp', () => {
  it.each([10, 20, 30, 40, 50, 60])('%i ms packets become continuous 20 ms frames', (ptime) => {
    const r = new RxReframer(0xd5);
    const packets = 24; // 240..1440 ms: whole frames in every case
    const frames = feed(r, ptime, packets);
    expectContinuous(frames, (packets * ptime) / 20);
  });

  it('10 ms halves arriving out of order still make whole frames', () => {
    const r = new RxReframer(0xd5);
    const frames = feed(r, 10, 8, [0, 2, 1, 3, 5, 4, 7, 6]);
    expectContinuous(
      frames.sort((a, b) => a.index - b.index),
      4,
    );
  });

  it('a lost 10 ms half is played with silence in its place once later audio arrives', () => {
    const r = new RxReframer(0xd5);
    const frames = feed(r, 10, 10, [0, 2, 3, 4, 5, 6, 7, 8, 9]); // packet 1 (2nd half of frame 0) lost
    const f0 = frames.find((f) => f.index === 0)!;
    expect(f0.payload.subarray(0, 80)).toEqual(ramp(0, 80));
    expect(f0.payload.subarray(80).every((b) => b === 0xd5)).toBe(true);
  });

  it('a timestamp jump (new timeline) continues right after the last frame; restart() does the same', () => {
    const r = new RxReframer(0xd5);
    feed(r, 20, 3);
    const after = r.push(12345, ramp(0, 160));
    expect(after.map((f) => f.index)).toEqual([3]);
    r.restart();
    expect(r.push(999, ramp(0, 320)).map((f) => f.index)).toEqual([4, 5]);
  });
});

describe('TxPacketizer: 20 ms frames → the peer ptime', () => {
  it.each([10, 20, 30, 40, 60])('%i ms: packets of ptime·8 bytes with contiguous timestamps', (ptime) => {
    const p = new TxPacketizer(ptime);
    const pkts = [];
    for (let i = 0; i < 12; i++) pkts.push(...p.push(ramp(i * 160, 160), (1000 + i * 160) >>> 0));
    expect(pkts.length).toBe((12 * 20) / ptime);
    pkts.forEach((k, i) => {
      expect(k.payload).toEqual(ramp(i * ptime * 8, ptime * 8));
      expect(k.timestamp).toBe(1000 + i * ptime * 8);
    });
  });
});

describe('comfort noise', () => {
  it('plays at the level the CN packet gives, and never louder than -30 dBov', () => {
    const db = (x: Int16Array) => 20 * Math.log10(rmsOf(x) / 32767);
    expect(db(comfortNoisePcm(60))).toBeGreaterThan(-63);
    expect(db(comfortNoisePcm(60))).toBeLessThan(-57);
    expect(db(comfortNoisePcm(0))).toBeLessThan(-27);
  });
});
