import { describe, expect, it } from 'vitest';
import { TelephoneEventReader, TelephoneEventSender, telephoneEventPayload } from '../../src/core/telephone-event.js';

describe('RFC 4733 telephone-events', () => {
  it('at 48 kHz: durations and the event timestamp are in that clock, end packet three times', () => {
    const tx = new TelephoneEventSender(48000);
    expect(tx.enqueue('#', 60)).toBe(true);
    const pkts = [];
    for (let now = 1000; tx.pending > 0; now += 960) pkts.push(tx.step(now)!);
    expect(pkts.map((p) => p.timestamp)).toEqual(Array(6).fill(1000));
    expect(pkts.map((p) => p.payload.readUInt16BE(2))).toEqual([960, 1920, 2880, 2880, 2880, 2880]);
    expect(pkts.map((p) => (p.payload[1]! & 0x80) !== 0)).toEqual([false, false, false, true, true, true]);
    expect(pkts.map((p) => p.marker)).toEqual([true, false, false, false, false, false]);
    expect(pkts.every((p) => p.payload[0] === 11)).toBe(true);
    expect(tx.step(99)).toBeUndefined();
  });

  it('refuses unknown digits and bounds the queue', () => {
    const tx = new TelephoneEventSender(8000);
    expect(tx.enqueue('x', 100)).toBe(false);
    expect(tx.enqueue('12', 100)).toBe(false);
    for (let i = 0; i < 64; i++) expect(tx.enqueue('1', 100)).toBe(true);
    expect(tx.enqueue('1', 100)).toBe(false);
    expect(tx.pending).toBe(64);
  });

  it('reader: one digit per event, hostile packets ignored', () => {
    const rx = new TelephoneEventReader(8000);
    expect(rx.read(5, telephoneEventPayload(5, false, 10, 160))).toBeUndefined();
    expect(rx.read(5, telephoneEventPayload(5, true, 10, 800))).toEqual({ digit: '5', durationMs: 100 });
    expect(rx.read(5, telephoneEventPayload(5, true, 10, 800))).toBeUndefined(); // repeated end
    expect(rx.read(6, Buffer.from([1, 0x80]))).toBeUndefined(); // short
    expect(rx.read(7, telephoneEventPayload(200, true, 10, 800))).toBeUndefined(); // not a DTMF event
    expect(rx.read(8, telephoneEventPayload(0, true, 10, 0xffff))).toEqual({ digit: '0', durationMs: 8192 });
  });
});
