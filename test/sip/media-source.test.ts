import { describe, expect, it } from 'vitest';
import { AddressSet, SampledLog, SourceLatch } from '../../src/sip/media-source.js';

describe('media source policy', () => {
  it('AddressSet: CIDRs and single addresses, IPv4-mapped IPv6, IPv6 spellings; junk matches nothing', () => {
    const set = new AddressSet(['196.12.0.0/16', '10.1.1.1', '2001:db8::/32', 'not-an-ip']);
    expect(set.has('196.12.200.7')).toBe(true);
    expect(set.has('::ffff:196.12.0.1')).toBe(true);
    expect(set.has('10.1.1.1')).toBe(true);
    expect(set.has('10.1.1.2')).toBe(false);
    expect(set.has('2001:DB8:0:0::5')).toBe(true);
    expect(set.has('garbage')).toBe(false);
    expect(new AddressSet().has('127.0.0.1')).toBe(false);
  });

  it('SourceLatch: SDP address or mediaAllow only; no takeover while the latched source talks; re-latch after it goes quiet', () => {
    const latch = new SourceLatch(new AddressSet(['10.0.0.0/24']), '192.0.2.10', 250);
    expect(latch.check({ address: '203.0.113.9', port: 4000 }, 0)).toBe('foreign');
    expect(latch.latched).toBeUndefined();
    expect(latch.check({ address: '192.0.2.10', port: 4000 }, 10)).toBe('latched');
    expect(latch.check({ address: '10.0.0.7', port: 5000 }, 100)).toBe('foreign'); // contending
    expect(latch.check({ address: '192.0.2.10', port: 4000 }, 200)).toBe('current');
    expect(latch.check({ address: '10.0.0.7', port: 5000 }, 449)).toBe('foreign');
    expect(latch.check({ address: '10.0.0.7', port: 5000 }, 460)).toBe('relatched');
    expect(latch.latched).toEqual({ address: '10.0.0.7', port: 5000 });
    latch.follow('198.51.100.1'); // re-INVITE to a new address
    expect(latch.latched).toBeUndefined();
    expect(latch.allows('198.51.100.1')).toBe(true);
    expect(latch.allows('192.0.2.10')).toBe(false);
  });

  it('SampledLog: one line per interval with the count folded in', () => {
    const log = new SampledLog(1000);
    expect(log.take(0)).toBe(1);
    for (let t = 1; t < 1000; t += 10) expect(log.take(t)).toBeUndefined();
    expect(log.take(1000)).toBe(101);
  });
});
