import { BlockList, isIP } from 'node:net';
import type { TrunkConfig } from '../config/schema.js';
import { parseNameAddr, parseUri } from './message.js';

/**
 * Carrier trunks: which trunk an INVITE came from (by source IP against `allow` CIDRs), number
 * normalisation to E.164, and the trunk's codec order. CIDR matching uses node:net BlockList
 * (IPv4 and IPv6) rather than a hand-rolled mask check.
 */
export class TrunkTable {
  private readonly entries: { trunk: TrunkConfig; list: BlockList }[];

  constructor(trunks: TrunkConfig[]) {
    // Trunks matched only by registration take no INVITE by source address.
    this.entries = trunks
      .filter((t) => t.match !== 'registration')
      .map((trunk) => {
        const list = new BlockList();
        for (const cidr of trunk.allow) {
          const [addr, bits] = cidr.split('/');
          const type = isIP(addr!) === 6 ? 'ipv6' : 'ipv4';
          if (bits === undefined) list.addAddress(addr!, type);
          else list.addSubnet(addr!, Number(bits), type);
        }
        return { trunk, list };
      });
  }

  /** True when trunk `name` takes INVITEs by address and its `allow` covers `address`. */
  covers(name: string, address: string): boolean {
    const e = this.entries.find((x) => x.trunk.name === name);
    const addr = address.startsWith('::ffff:') ? address.slice(7) : address;
    const type = isIP(addr) === 6 ? 'ipv6' : isIP(addr) === 4 ? 'ipv4' : undefined;
    return !!e && !!type && e.list.check(addr, type);
  }

  /** The first trunk whose `allow` covers `address`, or undefined (→ 403). */
  match(address: string): TrunkConfig | undefined {
    const addr = address.startsWith('::ffff:') ? address.slice(7) : address;
    const type = isIP(addr) === 6 ? 'ipv6' : isIP(addr) === 4 ? 'ipv4' : undefined;
    if (!type) return undefined;
    return this.entries.find((e) => e.list.check(addr, type))?.trunk;
  }
}

/**
 * A carrier number to E.164 (`+<cc><national significant number>`), using the trunk's country
 * code and national prefix: `0788123456` on MTN Rwanda (cc 250, prefix 0) → `+250788123456`;
 * `21234567` on GO Malta (cc 356, no prefix) → `+35621234567`. Already-international forms
 * (`+…`, `00…`) keep their own country code. Non-digits (visual separators) are dropped.
 */
export function toE164(raw: string, trunk: Pick<TrunkConfig, 'countryCode' | 'nationalPrefix'>): string {
  const s = raw.trim();
  if (!s) return s;
  if (s.startsWith('+')) return `+${s.slice(1).replace(/\D/g, '')}`;
  const d = s.replace(/\D/g, '');
  if (!d) return s; // anonymous / alphanumeric: leave as sent
  if (d.startsWith('00')) return `+${d.slice(2)}`;
  const prefix = trunk.nationalPrefix;
  if (prefix && d.startsWith(prefix)) return `+${trunk.countryCode}${d.slice(prefix.length)}`;
  // Some carriers send the country code without '+' (e.g. 250788123456).
  if (d.startsWith(trunk.countryCode) && d.length > trunk.countryCode.length + 6) return `+${d}`;
  return `+${trunk.countryCode}${d}`;
}

/** The user part of a From/To/Request-URI value (`sip:0788123456@host` → `0788123456`). */
export function userOf(headerOrUri: string): string {
  const na = parseNameAddr(headerOrUri);
  const uri = parseUri(na?.uri ?? headerOrUri);
  if (!uri) return '';
  return (uri.scheme === 'tel' ? uri.host || uri.user : uri.user) ?? '';
}
