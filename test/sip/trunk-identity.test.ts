import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { testLogger } from '../../src/core/logger.js';
import { trunkResolver } from '../../src/sip/trunk-identity.js';

/** What the SIP front asks of TrunkResolver, per INVITE: source address and headers. */
const config = parseConfig(
  {
    sip: { trustedProxies: ['10.0.0.5/32'] },
    trunks: [
      { name: 'mtn-rwanda', allow: ['196.12.0.0/16'], countryCode: '250' },
      { name: 'go-malta', allow: ['212.56.128.0/19'], countryCode: '356' },
    ],
  },
  {},
);
const resolver = trunkResolver(config, testLogger(), () => undefined);
const invite = (address: string, headers: Record<string, string> = {}) => ({
  source: { address, port: 5060, transport: 'udp' as const },
  requestUri: 'sip:0700000001@gw',
  header: (n: string) => headers[n.toLowerCase()],
});
const claim = (trunk: string, source?: string) => ({
  'x-gateway-trunk': trunk,
  ...(source !== undefined && { 'x-gateway-source': source }),
});

describe('TrunkResolver: trunk identity by source address or from a trusted proxy', () => {
  it('a carrier straight to the gateway: its address decides; a claim in the headers is ignored', () => {
    expect(resolver.resolve(invite('196.12.3.4'))).toMatchObject({
      ok: true,
      via: 'source',
      trunk: { name: 'mtn-rwanda' },
    });
    const r = resolver.resolve(invite('196.12.3.4', claim('go-malta', '212.56.130.1')));
    expect(r).toMatchObject({ ok: true, via: 'source', trunk: { name: 'mtn-rwanda' } });
    // A stranger's claim does not open the door either.
    expect(resolver.resolve(invite('203.0.113.9', claim('go-malta', '212.56.130.1')))).toMatchObject({
      ok: false,
      reason: 'Forbidden (unknown source address)',
    });
  });

  it('from the trusted proxy: the named trunk, if it allows the carrier address reported', () => {
    expect(resolver.resolve(invite('10.0.0.5', claim('go-malta', '212.56.130.1')))).toMatchObject({
      ok: true,
      via: 'proxy',
      trunk: { name: 'go-malta' },
    });
    expect(resolver.resolve(invite('::ffff:10.0.0.5', claim(' mtn-rwanda ', '196.12.0.1')))).toMatchObject({
      ok: true,
      trunk: { name: 'mtn-rwanda' },
    });
  });

  it('hostile proxy headers: unknown trunk, address outside the trunk, missing or garbage source: 403', () => {
    const cases: [Record<string, string>, string][] = [
      [claim('no-such-trunk', '212.56.130.1'), 'Forbidden (unknown trunk)'],
      [claim('x'.repeat(5000), '212.56.130.1'), 'Forbidden (unknown trunk)'],
      [claim('go-malta', '196.12.0.1'), 'Forbidden (trunk does not allow the carrier address)'],
      [claim('go-malta'), 'Forbidden (trunk does not allow the carrier address)'],
      [claim('go-malta', 'not-an-address'), 'Forbidden (trunk does not allow the carrier address)'],
    ];
    for (const [headers, reason] of cases)
      expect(resolver.resolve(invite('10.0.0.5', headers)), JSON.stringify(headers).slice(0, 80)).toMatchObject({
        ok: false,
        reason,
      });
    // The proxy without a claim (e.g. an address.list line without a tag) is just another source.
    expect(resolver.resolve(invite('10.0.0.5'))).toMatchObject({
      ok: false,
      reason: 'Forbidden (unknown source address)',
    });
  });
});
