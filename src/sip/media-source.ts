import { BlockList, isIP } from 'node:net';

/**
 * Who may send media to an RTP leg (the anti-hijack rule): the address in the carrier's SDP, or an
 * address in the trunk's media CIDRs (`mediaAllow`, by default its signalling `allow` list: SBCs
 * often send media from another address than the one they put in SDP). Among allowed sources the
 * leg latches onto the first that sends, and moves to another only once the latched one has gone
 * quiet (SBC media failover, a new SSRC from a new address), so a second sender — even one inside
 * the trunk's range — cannot take over a call whose media is flowing.
 */
export class AddressSet {
  private readonly list = new BlockList();
  private empty = true;

  constructor(cidrs: readonly string[] = []) {
    for (const cidr of cidrs) this.add(cidr);
  }

  add(cidr: string): void {
    const [raw, bits] = cidr.split('/');
    const addr = plain(raw!);
    const type = isIP(addr) === 6 ? 'ipv6' : isIP(addr) === 4 ? 'ipv4' : undefined;
    if (!type) return;
    if (bits === undefined) this.list.addAddress(addr, type);
    else this.list.addSubnet(addr, Number(bits), type);
    this.empty = false;
  }

  has(address: string): boolean {
    if (this.empty) return false;
    const addr = plain(address);
    const v = isIP(addr);
    return v !== 0 && this.list.check(addr, v === 6 ? 'ipv6' : 'ipv4');
  }
}

/** IPv4-mapped IPv6 (`::ffff:1.2.3.4`, from dual-stack sockets) compared as IPv4. */
const plain = (a: string): string => (a.toLowerCase().startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);

export interface Endpoint {
  address: string;
  port: number;
}

/** What the latch made of one packet's source. */
export type SourceVerdict = 'latched' | 'current' | 'relatched' | 'foreign';

/** A latched source must be quiet this long before another allowed source may take over. */
export const RELATCH_AFTER_MS = 250;

export class SourceLatch {
  private current: Endpoint | undefined;
  private lastSeen = 0;
  private sdp: AddressSet; // a set, so IPv6 spellings (case, zero compression) compare equal

  constructor(
    private readonly allowed: AddressSet,
    sdpAddress: string,
    private readonly relatchAfterMs = RELATCH_AFTER_MS,
  ) {
    this.sdp = new AddressSet([sdpAddress]);
  }

  get latched(): Endpoint | undefined {
    return this.current;
  }

  /** A re-INVITE named a new media address: it becomes allowed, and the next allowed sender latches. */
  follow(sdpAddress: string): void {
    this.sdp = new AddressSet([sdpAddress]);
    this.current = undefined;
  }

  /** May this address send us media (or RTCP) at all? */
  allows(address: string): boolean {
    return this.sdp.has(address) || this.allowed.has(address);
  }

  check(src: Endpoint, now: number): SourceVerdict {
    if (!this.allows(src.address)) return 'foreign';
    const cur = this.current;
    if (cur && cur.address === src.address && cur.port === src.port) {
      this.lastSeen = now;
      return 'current';
    }
    if (cur && now - this.lastSeen < this.relatchAfterMs) return 'foreign';
    this.current = { address: src.address, port: src.port };
    this.lastSeen = now;
    return cur ? 'relatched' : 'latched';
  }
}

/** At most one log line per interval for a stream of rejected packets, with the count in between. */
export class SampledLog {
  private last = -Infinity;
  private suppressed = 0;

  constructor(private readonly intervalMs = 10_000) {}

  /** Returns the number of events folded into this line, or undefined when this one is suppressed. */
  take(now: number): number | undefined {
    if (now - this.last < this.intervalMs) {
      this.suppressed++;
      return undefined;
    }
    const n = this.suppressed + 1;
    this.suppressed = 0;
    this.last = now;
    return n;
  }
}
