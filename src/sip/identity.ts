import type { TrunkConfig } from '../config/schema.js';
import { GatewayError } from '../core/errors.js';
import type { DigestClientCredentials } from './digest-client.js';
import { headerValueProblem } from './header-check.js';
import { parseUri } from './message.js';
import { toE164 } from './trunks.js';

/**
 * Who we are on a trunk's outbound INVITEs: the From (user and domain the carrier authenticates),
 * the caller-ID header the carrier reads the presented number from (P-Asserted-Identity,
 * P-Preferred-Identity or Remote-Party-ID, RFC 3325 / draft-ietf-sip-privacy-04), privacy, and
 * numbers in the trunk's format. Every value is checked before it goes into a header.
 */
export interface OutboundIdentity {
  /** The From value without tag (`<sip:user@domain>`, or a display name when withheld). */
  from: string;
  headers: Record<string, string>;
  /** Digest credentials for 401/407 on this trunk, if any. */
  credentials: DigestClientCredentials | undefined;
}

/** A number in the trunk's format: +E.164, national (nationalPrefix + NSN) or E.164 digits. */
export function formatNumber(
  raw: string,
  trunk: Pick<TrunkConfig, 'countryCode' | 'nationalPrefix' | 'numberFormat'>,
): string {
  const e164 = toE164(raw, trunk);
  if (!/^\+\d+$/.test(e164)) return raw; // not a number (anonymous, a name): as given
  switch (trunk.numberFormat) {
    case 'e164-digits':
      return e164.slice(1);
    case 'national':
      return e164.startsWith(`+${trunk.countryCode}`)
        ? `${trunk.nationalPrefix}${e164.slice(1 + trunk.countryCode.length)}`
        : `00${e164.slice(1)}`; // a foreign number from a national-format trunk: international prefix
    default:
      return e164;
  }
}

function checked(value: string, what: string, trunk: string): string {
  const problem = headerValueProblem(value, /[<>"\s]/);
  if (problem) throw new GatewayError('config_invalid', `trunk ${trunk}: ${what} ${problem}`);
  return value;
}

/** The domain of our From on a trunk: fromDomain, else the registration domain / registrar host. */
function fromDomainOf(trunk: TrunkConfig, ourAddress: string): string {
  if (trunk.fromDomain) return trunk.fromDomain;
  if (trunk.register?.domain) return trunk.register.domain;
  if (trunk.register) {
    const r = trunk.register.registrar;
    const host = parseUri(/^sips?:/i.test(r) ? r : `sip:${r}`)?.host;
    if (host) return host.includes(':') ? `[${host}]` : host;
  }
  return ourAddress.includes(':') ? `[${ourAddress}]` : ourAddress;
}

export function outboundIdentity(trunk: TrunkConfig, caller: string, ourAddress: string): OutboundIdentity {
  const number = formatNumber(caller, trunk);
  const domain = checked(fromDomainOf(trunk, ourAddress), 'From domain', trunk.name);
  const user = checked(trunk.fromUser ?? trunk.register?.username ?? number, 'From user', trunk.name);
  const withheld = trunk.privacy === 'id';
  const headers: Record<string, string> = {};
  const presented = /^\+?\d+$/.test(number) ? checked(number, 'caller number', trunk.name) : undefined;
  if (presented) {
    const uri = `<sip:${presented}@${domain}>`;
    if (trunk.callerIdHeader === 'pai') headers['p-asserted-identity'] = uri;
    if (trunk.callerIdHeader === 'ppi') headers['p-preferred-identity'] = uri;
    if (trunk.callerIdHeader === 'rpid')
      headers['remote-party-id'] = `${uri};party=calling;screen=no;privacy=${withheld ? 'full' : 'off'}`;
  }
  if (withheld && trunk.callerIdHeader !== 'rpid') headers.privacy = 'id';
  // RFC 3323 §4.1.1.3: with privacy the From shows no name; the account user stays for authentication.
  const display = withheld ? '"Anonymous" ' : '';
  const credentials: DigestClientCredentials | undefined = trunk.outboundAuth
    ? { ...trunk.outboundAuth }
    : trunk.register
      ? {
          username: trunk.register.authUsername ?? trunk.register.username,
          password: trunk.register.password,
          realm: trunk.register.realm,
        }
      : undefined;
  return { from: `${display}<sip:${user}@${domain}>`, headers, credentials };
}
