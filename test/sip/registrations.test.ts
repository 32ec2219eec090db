import { describe, expect, it } from 'vitest';
import { trunkSchema } from '../../src/config/schema.js';
import { testLogger } from '../../src/core/logger.js';
import type { EmbeddedSipEngine } from '../../src/sip/embedded.js';
import { TrunkRegistrations } from '../../src/sip/registrations.js';

/** The trunk match for INVITEs addressed to a registered Contact (no engine traffic needed). */
const engine = { publicAddress: '127.0.0.1', publicAddressFixed: true, userAgent: 't' } as unknown as EmbeddedSipEngine;
const trunk = (name: string, extra: Record<string, unknown>) =>
  trunkSchema.parse({
    name,
    countryCode: '250',
    register: { registrar: 'sip:192.0.2.10', username: `${name}-user`, password: 'p', ...extra },
    ...(extra.match ? { match: extra.match } : {}),
  });

describe('registration trunk match (hostile sources)', () => {
  it('matches the Contact user or the username; unknown users and ip-only trunks do not match', () => {
    const trunks = [
      trunk('a', { contactUser: 'x7f3k9' }),
      trunkSchema.parse({ ...trunk('b', {}), match: 'ip', allow: ['10.0.0.1'] }),
    ];
    const regs = new TrunkRegistrations(engine, trunks, testLogger());
    expect(regs.size).toBe(2);
    expect(regs.matchInvite('x7f3k9', '198.51.100.66', trunks)?.name).toBe('a');
    expect(regs.matchInvite('a-user', '198.51.100.66', trunks)?.name).toBe('a');
    expect(regs.matchInvite('b-user', '198.51.100.66', trunks)).toBeUndefined();
    expect(regs.matchInvite('', '198.51.100.66', trunks)).toBeUndefined();
    expect(regs.matchInvite('someone', '198.51.100.66', trunks)).toBeUndefined();
  });

  it('with requireRegistrarSource, only the registrar’s resolved addresses may deliver (none before resolving)', () => {
    const trunks = [trunk('a', { requireRegistrarSource: true })];
    const regs = new TrunkRegistrations(engine, trunks, testLogger());
    expect(regs.matchInvite('a-user', '192.0.2.10', trunks)).toBeUndefined(); // not resolved yet: refuse
    expect(regs.matchInvite('a-user', '198.51.100.66', trunks)).toBeUndefined();
  });
});
