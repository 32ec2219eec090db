import { describe, expect, it } from 'vitest';
import { orderSrv, resolveSipTargets, type SipDnsResolver, type SrvAnswer } from '../../src/sip/srv.js';

/** A resolver answering from tables, recording every query (names as asked). */
function fakeDns(srv: Record<string, SrvAnswer[]>, hosts: Record<string, string[]>) {
  const queries: string[] = [];
  const resolver: SipDnsResolver = {
    resolveSrv: (name) => {
      queries.push(`SRV ${name}`);
      const r = srv[name];
      return r ? Promise.resolve(r) : Promise.reject(Object.assign(new Error('queryNoData'), { code: 'ENODATA' }));
    },
    addresses: (host) => {
      queries.push(`A ${host}`);
      const a = hosts[host];
      return a ? Promise.resolve(a) : Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), {}));
    },
  };
  return { resolver, queries };
}

describe('RFC 3263 SRV resolution for outbound targets', () => {
  it('uses _sip._udp SRV records in priority order, then each target host’s A records', async () => {
    const { resolver, queries } = fakeDns(
      {
        '_sip._udp.carrier.example': [
          { name: 'sbc2.carrier.example', port: 5070, priority: 20, weight: 0 },
          { name: 'sbc1.carrier.example', port: 5060, priority: 10, weight: 0 },
        ],
      },
      { 'sbc1.carrier.example': ['192.0.2.1'], 'sbc2.carrier.example': ['192.0.2.2', '192.0.2.3'] },
    );
    const t = await resolveSipTargets('sip:+250788@carrier.example', { resolver });
    expect(t).toEqual([
      { address: '192.0.2.1', port: 5060, transport: 'udp', serverName: undefined },
      { address: '192.0.2.2', port: 5070, transport: 'udp', serverName: undefined },
      { address: '192.0.2.3', port: 5070, transport: 'udp', serverName: undefined },
    ]);
    expect(queries[0]).toBe('SRV _sip._udp.carrier.example');
  });

  it('falls to _sip._tcp when there is no UDP SRV; sips: asks _sips._tcp and names the domain for TLS', async () => {
    const { resolver } = fakeDns(
      {
        '_sip._tcp.c.example': [{ name: 'edge.c.example', port: 5080, priority: 1, weight: 1 }],
        '_sips._tcp.c.example': [{ name: 'edge.c.example', port: 5081, priority: 1, weight: 1 }],
      },
      { 'edge.c.example': ['198.51.100.7'] },
    );
    expect(await resolveSipTargets('sip:c.example', { resolver })).toEqual([
      { address: '198.51.100.7', port: 5080, transport: 'tcp', serverName: undefined },
    ]);
    expect(await resolveSipTargets('sips:c.example', { resolver })).toEqual([
      { address: '198.51.100.7', port: 5081, transport: 'tls', serverName: 'c.example' },
    ]);
  });

  it('an explicit port or an IP skips SRV; no SRV at all falls back to A on 5060/5061', async () => {
    const { resolver, queries } = fakeDns({}, { 'plain.example': ['203.0.113.5'] });
    expect(await resolveSipTargets('sip:plain.example:5090;transport=tcp', { resolver })).toEqual([
      { address: '203.0.113.5', port: 5090, transport: 'tcp', serverName: undefined },
    ]);
    expect(queries).toEqual(['A plain.example']);
    expect(await resolveSipTargets('sip:10.1.1.1', { resolver })).toEqual([
      { address: '10.1.1.1', port: 5060, transport: 'udp' },
    ]);
    expect(await resolveSipTargets('sip:plain.example;transport=tls', { resolver })).toEqual([
      { address: '203.0.113.5', port: 5061, transport: 'tls', serverName: 'plain.example' },
    ]);
    expect(queries).toContain('SRV _sips._tcp.plain.example');
  });

  it('a "." target means no service; unknown hosts and transports fail with the cause', async () => {
    const { resolver } = fakeDns(
      { '_sip._udp.none.example': [{ name: '.', port: 0, priority: 0, weight: 0 }] },
      { 'none.example': ['192.0.2.9'] },
    );
    expect((await resolveSipTargets('sip:none.example', { resolver }))[0]).toMatchObject({ port: 5060 });
    await expect(resolveSipTargets('sip:missing.example', { resolver })).rejects.toThrow(
      /cannot resolve missing.example/,
    );
    await expect(resolveSipTargets('sip:a.example;transport=sctp', { resolver })).rejects.toThrow(/sctp/);
    await expect(resolveSipTargets('tel:+250788', { resolver })).rejects.toThrow(/not a SIP URI/);
  });

  it('weights share the load within a priority (RFC 2782) and zero-weight records still come last', () => {
    const recs: SrvAnswer[] = [
      { name: 'a', port: 1, priority: 1, weight: 90 },
      { name: 'b', port: 1, priority: 1, weight: 10 },
      { name: 'z', port: 1, priority: 1, weight: 0 },
      { name: 'low', port: 1, priority: 5, weight: 100 },
    ];
    let seed = 1;
    const rand = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const firsts: Record<string, number> = {};
    for (let i = 0; i < 2000; i++) {
      const o = orderSrv(recs, rand);
      firsts[o[0]!.name] = (firsts[o[0]!.name] ?? 0) + 1;
      expect(o[3]!.name).toBe('low');
      expect(o.map((r) => r.name).sort()).toEqual(['a', 'b', 'low', 'z']);
    }
    expect(firsts.a! / 2000).toBeGreaterThan(0.8);
    expect(firsts.b! / 2000).toBeGreaterThan(0.05);
    expect(firsts.z ?? 0).toBe(0);
  });
});
