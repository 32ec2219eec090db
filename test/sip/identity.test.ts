import { describe, expect, it } from 'vitest';
import { configSchema, trunkSchema } from '../../src/config/schema.js';
import { trunkTarget } from '../../src/sip/dialer.js';
import { formatNumber, outboundIdentity } from '../../src/sip/identity.js';
import { TrunkTable } from '../../src/sip/trunks.js';

const regTrunk = (over: Record<string, unknown> = {}) =>
  trunkSchema.parse({
    name: 'mtn',
    countryCode: '250',
    nationalPrefix: '0',
    register: { registrar: 'sip:reg.mtn.example', username: 'gw1', password: 'pw' },
    ...over,
  });

describe('outbound identity and number format per trunk', () => {
  it('writes numbers as +E.164, national or E.164 digits', () => {
    const t = (numberFormat: string) => regTrunk({ numberFormat });
    expect(formatNumber('0788123456', t('e164'))).toBe('+250788123456');
    expect(formatNumber('+250788123456', t('national'))).toBe('0788123456');
    expect(formatNumber('+35621234567', t('national'))).toBe('0035621234567');
    expect(formatNumber('0788123456', t('e164-digits'))).toBe('250788123456');
    expect(formatNumber('anonymous', t('national'))).toBe('anonymous');
  });

  it('From is the account on the registration domain; the caller number goes in PAI / PPI / RPID', () => {
    const pai = outboundIdentity(regTrunk({ callerIdHeader: 'pai' }), '+250788000111', '10.0.0.5');
    expect(pai.from).toBe('<sip:gw1@reg.mtn.example>');
    expect(pai.headers).toEqual({ 'p-asserted-identity': '<sip:+250788000111@reg.mtn.example>' });
    expect(pai.credentials).toEqual({ username: 'gw1', password: 'pw', realm: undefined });
    const ppi = outboundIdentity(regTrunk({ callerIdHeader: 'ppi', numberFormat: 'national' }), '+250788000111', 'x');
    expect(ppi.headers).toEqual({ 'p-preferred-identity': '<sip:0788000111@reg.mtn.example>' });
    const rpid = outboundIdentity(regTrunk({ callerIdHeader: 'rpid', privacy: 'id' }), '+250788000111', 'x');
    expect(rpid.headers['remote-party-id']).toBe(
      '<sip:+250788000111@reg.mtn.example>;party=calling;screen=no;privacy=full',
    );
    expect(rpid.from).toBe('"Anonymous" <sip:gw1@reg.mtn.example>');
  });

  it('privacy id adds Privacy: id; an IP trunk uses fromUser/fromDomain or the number at our address', () => {
    const hidden = outboundIdentity(regTrunk({ callerIdHeader: 'pai', privacy: 'id' }), '+250788000111', 'x');
    expect(hidden.headers.privacy).toBe('id');
    const ip = trunkSchema.parse({ name: 'go', allow: ['10.1.1.1'], countryCode: '356' });
    expect(outboundIdentity(ip, '+35621234567', '198.51.100.4')).toMatchObject({
      from: '<sip:+35621234567@198.51.100.4>',
      headers: {},
      credentials: undefined,
    });
    const custom = trunkSchema.parse({
      ...ip,
      fromUser: 'acct9',
      fromDomain: 'sbc.go.example',
      outboundAuth: { username: 'acct9', password: 'p' },
    });
    expect(outboundIdentity(custom, '+35621234567', 'x')).toMatchObject({
      from: '<sip:acct9@sbc.go.example>',
      credentials: { username: 'acct9', password: 'p' },
    });
  });

  it('config refuses header-breaking values; a registration trunk dials via its registrar', () => {
    expect(trunkSchema.safeParse({ name: 'x', countryCode: '1', fromUser: 'a b' }).success).toBe(false);
    expect(trunkSchema.safeParse({ name: 'x', countryCode: '1', fromUser: 'a\r\nVia: x' }).success).toBe(false);
    expect(trunkSchema.safeParse({ name: 'x', countryCode: '1', fromDomain: 'a>b' }).success).toBe(false);
    const tcp = regTrunk({
      register: { registrar: 'reg.mtn.example:5080', username: 'gw1', password: 'p', transport: 'tcp' },
    });
    expect(trunkTarget(tcp, '+250788123456')).toBe('sip:+250788123456@reg.mtn.example:5080;transport=tcp');
    expect(trunkTarget(regTrunk({ numberFormat: 'national' }), '+250788123456')).toBe('sip:0788123456@reg.mtn.example');
  });

  it('trunk match: IP trunks need allow; registration-only trunks take no INVITE by address', () => {
    const base = { routes: { local: { kind: 'local' } } };
    const bad = configSchema.safeParse({ ...base, trunks: [{ name: 'a', countryCode: '1' }] });
    expect(bad.success).toBe(false);
    const needsReg = configSchema.safeParse({
      ...base,
      trunks: [{ name: 'a', countryCode: '1', allow: ['1.2.3.4'], match: 'both' }],
    });
    expect(needsReg.success).toBe(false);
    const table = new TrunkTable([
      regTrunk({ allow: ['10.0.0.0/8'], match: 'registration' }),
      regTrunk({ name: 'both', allow: ['10.0.0.0/8'], match: 'both' }),
    ]);
    expect(table.match('10.1.2.3')?.name).toBe('both');
  });
});
