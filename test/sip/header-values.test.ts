import { describe, expect, it } from 'vitest';
import { TransferPolicy } from '../../src/core/transfer-policy.js';
import {
  isIdentityUser,
  isSipUri,
  normaliseDestination,
  referTarget,
  safeExtraHeaders,
  safeIdentity,
} from '../../src/sip/header-values.js';
import { serialize, SipHeaders } from '../../src/sip/message.js';

const host = (n: string) => `sip:${n}@196.12.0.10`;

describe('SIP header values (one validator for Refer-To, From, P-Asserted-Identity, API from)', () => {
  it('accepts what carriers and operators write', () => {
    expect(normaliseDestination('+250 788-000.002')).toBe('+250788000002');
    expect(normaliseDestination('tel:+250-788-000-002')).toBe('tel:+250788000002');
    expect(normaliseDestination('sip:agents@pbx.example')).toBe('sip:agents@pbx.example');
    expect(isSipUri('sips:desk@[2001:db8::1]:5061;transport=tls')).toBe(true);
    expect(referTarget('+250788000002', host)).toBe('sip:+250788000002@196.12.0.10');
    expect(isIdentityUser('+250788123456')).toBe(true);
    expect(isIdentityUser('anonymous')).toBe(true);
  });

  it.each([
    'sip:a@b.example\r\nX-Evil: 1',
    'sip:a@b.example>;x=<sip:evil@x',
    '+250788\nContact: <sip:x@y>',
    'sip:a@b.example?Subject=hi',
    'sip:a b@c.example',
    'sip:a@b.example;tra\u0000nsport=tcp',
    'javascript:alert(1)',
    '<sip:a@b.example>',
    '',
  ])('refuses %j as a Refer-To', (v) => {
    expect(() => referTarget(v, host, 'call-1')).toThrow(/not a valid SIP value/);
  });

  it('a WhatsApp transfer destination is whatsapp:+E.164 only', () => {
    expect(normaliseDestination('whatsapp:+250 788-000.222')).toBe('whatsapp:+250788000222');
    for (const bad of [
      'whatsapp:250788000222',
      'whatsapp:+2507880\r\nX: 1',
      'whatsapp:+1234',
      `whatsapp:+${'9'.repeat(16)}`,
    ])
      expect(normaliseDestination(bad)).toBeUndefined();
  });

  it('a hostile caller identity goes out anonymous; a PAI with CR/LF or a bad URI is dropped', () => {
    expect(safeIdentity('+250788\r\nVia: x')).toBe('anonymous');
    // A name-addr (a trunk's presented identity) passes only when nothing in it can break the header.
    expect(safeIdentity('"Anonymous" <sip:+250788000111@carrier.example>')).toBe(
      '"Anonymous" <sip:+250788000111@carrier.example>',
    );
    expect(safeIdentity('"Ev"il" <sip:x@y>')).toBe('anonymous');
    expect(safeIdentity('"Evil\r\nVia: x" <sip:x@y>')).toBe('anonymous');
    expect(safeIdentity('"Evil" <sip:x@y>;tag=1\r\nVia: x')).toBe('anonymous');
    expect(safeIdentity('+250788123456')).toBe('+250788123456');
    const r = safeExtraHeaders({
      'P-Asserted-Identity': '<sip:a b@gateway.invalid>',
      'X-Gateway-Call-Id': 'abc\r\nX: y',
      'X-Ok': 'fine',
    });
    expect(r.headers).toEqual({ 'X-Ok': 'fine' });
    expect(r.dropped.sort()).toEqual(['P-Asserted-Identity', 'X-Gateway-Call-Id']);
  });

  it('the serializer refuses a line break that slipped through', () => {
    const headers = new SipHeaders();
    headers.add('refer-to', '<sip:a@b>\r\nX-Evil: 1');
    expect(() => serialize({ kind: 'request', method: 'REFER', uri: 'sip:x@y', headers, body: '' })).toThrow(
      /line break/,
    );
  });
});

describe('TransferPolicy', () => {
  const p = new TransferPolicy(['+250788000000', '+25078*', 'sip:agents@pbx.example']);
  it('allows exact numbers, E.164 prefixes and exact URIs only', () => {
    expect(p.check('+250 788 000 000')).toEqual({ ok: true, destination: '+250788000000' });
    expect(p.check('tel:+250781234567')).toEqual({ ok: true, destination: '+250781234567' });
    expect(p.check('SIP:agents@pbx.example')).toMatchObject({ ok: true });
    expect(p.check('+88213000123').ok).toBe(false);
    expect(p.check('+25078\r\n1').ok).toBe(false);
    expect(p.check('sip:agents@pbx.example;transport=tcp').ok).toBe(false);
    expect(p.check(undefined)).toEqual({ ok: false, reason: 'no destination given' });
  });
  it('transferTarget is the fallback and is allowed; an empty list allows nothing', () => {
    const t = new TransferPolicy([], '+250788000000');
    expect(t.check(undefined)).toEqual({ ok: true, destination: '+250788000000' });
    expect(t.check('+250788000001').ok).toBe(false);
    expect(new TransferPolicy([]).empty).toBe(true);
  });
});
