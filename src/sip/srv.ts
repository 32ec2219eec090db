import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { GatewayError } from '../core/errors.js';
import { parseUri } from './message.js';

/**
 * RFC 3263 server location for requests we originate: the ordered list of (address, port,
 * transport) to try for a SIP URI. An IP host or an explicit port skips SRV (§4.2); otherwise
 * `_sips._tcp` for sips:, `_sip._<transport>` when the URI names a transport, else `_sip._udp` then
 * `_sip._tcp` (NAPTR is skipped: carriers publish SRV, and §4.1 allows going straight to it). SRV
 * records are ordered by priority and, within one priority, by weighted random choice (RFC 2782).
 * No SRV at all → the host's A records on 5060/5061. The caller fails over along the list on
 * timeout or 503 (§4.3). node:dns does the queries; only the RFC 3263 ordering is ours.
 */
export type SipTransport = 'udp' | 'tcp' | 'tls';

export interface SipTarget {
  address: string;
  port: number;
  transport: SipTransport;
  /** The name the TLS certificate must match (the SRV target host, RFC 5922 §4.2 uses the domain). */
  serverName?: string;
}

export interface SrvAnswer {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

/** The DNS queries we make, injectable for tests. */
export interface SipDnsResolver {
  resolveSrv(name: string): Promise<SrvAnswer[]>;
  /** Addresses of a host (A records; AAAA too when `family` is 0). */
  addresses(host: string, family: 0 | 4): Promise<string[]>;
}

const DNS_TIMEOUT_MS = 5000;

/** The system resolver with a per-query timeout (getaddrinfo has no deadline of its own). */
export function systemResolver(timeoutMs = DNS_TIMEOUT_MS): SipDnsResolver {
  const resolver = new Resolver({ timeout: Math.max(500, Math.floor(timeoutMs / 2)), tries: 2 });
  return {
    resolveSrv: (name) => resolver.resolveSrv(name),
    addresses: async (host, family) => {
      const all = await withDeadline(lookup(host, { all: true, family }), timeoutMs, `resolving ${host}`);
      return all.map((a) => a.address);
    },
  };
}

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer ${what} within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** RFC 2782 order: priority ascending; within a priority, weighted random without replacement. */
export function orderSrv(records: SrvAnswer[], random: () => number = Math.random): SrvAnswer[] {
  const byPriority = new Map<number, SrvAnswer[]>();
  for (const r of records) byPriority.set(r.priority, [...(byPriority.get(r.priority) ?? []), r]);
  const out: SrvAnswer[] = [];
  for (const prio of [...byPriority.keys()].sort((a, b) => a - b)) {
    // Zero-weight records first so they get a (small) chance, as RFC 2782 describes.
    const pool = byPriority.get(prio)!.sort((a, b) => a.weight - b.weight);
    while (pool.length) {
      const total = pool.reduce((s, r) => s + r.weight, 0);
      let pick = 0;
      if (total > 0) {
        const threshold = random() * total;
        let run = 0;
        pick = pool.findIndex((r) => (run += r.weight) > threshold);
        if (pick < 0) pick = pool.length - 1;
      }
      out.push(pool.splice(pick, 1)[0]!);
    }
  }
  return out;
}

export interface ResolveOptions {
  /** Overrides the URI's transport. */
  transport?: SipTransport;
  resolver?: SipDnsResolver;
  /** 4: A records only (the default while the engine signals over IPv4); 0: A and AAAA. */
  family?: 0 | 4;
  callId?: string;
  random?: () => number;
}

/** Every target for `uri`, in the order to try them. Rejects only when there is none at all. */
export async function resolveSipTargets(uri: string, opts: ResolveOptions = {}): Promise<SipTarget[]> {
  const u = parseUri(uri);
  if (!u || u.scheme === 'tel' || !u.host)
    throw new GatewayError('config_invalid', `not a SIP URI: ${uri}`, opts.callId);
  const secure = u.scheme === 'sips';
  const named = opts.transport ?? (u.params.transport?.toLowerCase() as string | undefined);
  if (named !== undefined && named !== 'udp' && named !== 'tcp' && named !== 'tls')
    throw new GatewayError('config_invalid', `unsupported SIP transport "${named}" in ${uri}`, opts.callId);
  const explicit = (secure ? 'tls' : named) as SipTransport | undefined;
  const host = u.host;
  const family = opts.family ?? 4;
  const tlsName = (t: SipTransport, name: string) => (t === 'tls' && !isIP(name) ? name : undefined);

  if (isIP(host)) {
    const t = explicit ?? 'udp';
    return [{ address: host, port: u.port ?? (t === 'tls' ? 5061 : 5060), transport: t }];
  }
  const resolver = opts.resolver ?? systemResolver();
  const hostTargets = async (name: string, port: number, t: SipTransport): Promise<SipTarget[]> => {
    const addrs = await resolver.addresses(name, family);
    return addrs.map((address) => ({ address, port, transport: t, serverName: tlsName(t, name) }));
  };
  const fail = (err: unknown): never => {
    throw new GatewayError('upstream', `cannot resolve ${host}: ${(err as Error).message}`, opts.callId, {
      cause: err,
    });
  };
  if (u.port !== undefined) {
    const t = explicit ?? 'udp';
    const out = await hostTargets(host, u.port, t).catch(fail);
    if (!out.length) fail(new Error('no addresses'));
    return out;
  }
  const services: [string, SipTransport][] = secure
    ? [['_sips._tcp', 'tls']]
    : explicit === 'tls'
      ? [['_sips._tcp', 'tls']]
      : explicit
        ? [[`_sip._${explicit}`, explicit]]
        : [
            ['_sip._udp', 'udp'],
            ['_sip._tcp', 'tcp'],
          ];
  for (const [service, t] of services) {
    let records: SrvAnswer[] = [];
    try {
      records = await resolver.resolveSrv(`${service}.${host}`);
    } catch {
      continue; // NXDOMAIN / no data / timeout: try the next service, then plain A records
    }
    // A single "." target means the service is decidedly not available (RFC 2782).
    records = records.filter((r) => r.name && r.name !== '.');
    if (!records.length) continue;
    const out: SipTarget[] = [];
    for (const r of orderSrv(records, opts.random)) {
      const addrs = await resolver.addresses(r.name, family).catch(() => [] as string[]);
      // The certificate is checked against the URI's domain (RFC 5922 §4.1), not the SRV target.
      for (const address of addrs) out.push({ address, port: r.port, transport: t, serverName: tlsName(t, host) });
    }
    if (out.length) return out;
  }
  const t = explicit ?? 'udp';
  const out = await hostTargets(host, t === 'tls' ? 5061 : 5060, t).catch(fail);
  if (!out.length) fail(new Error('no addresses'));
  return out;
}
