import type { GatewayConfig, TrunkConfig } from '../config/schema.js';
import type { Logger } from '../core/logger.js';
import type { IncomingInvite } from './engine.js';
import { AddressSet } from './media-source.js';
import type { TrunkRegistrations } from './registrations.js';
import { TrunkTable, userOf } from './trunks.js';

/** Set by the edge proxy (config/kamailio/kamailio.cfg): the trunk it matched the carrier to... */
export const TRUNK_HEADER = 'x-gateway-trunk';
/** ...and the carrier's own address, which the gateway checks against that trunk again. */
export const SOURCE_HEADER = 'x-gateway-source';

export type TrunkIdentity =
  { ok: true; trunk: TrunkConfig; via: 'proxy' | 'source' } | { ok: false; reason: string; why: string };

type InviteLike = Pick<IncomingInvite, 'source' | 'header' | 'requestUri'>;

/**
 * Which trunk an INVITE belongs to. Directly from a carrier: its source address (or registration).
 * Through Kamailio every INVITE comes from the proxy's address, so the proxy — which checked the
 * carrier's address once at the edge — names the trunk and that address in headers. They are
 * believed only from `sip.trustedProxies` (anyone else could write them) and still checked here:
 * the named trunk must exist and allow the carrier address the proxy reports, so a proxy whose
 * address list disagrees with ours cannot put a call on the wrong trunk.
 */
export class TrunkResolver {
  private readonly proxies: AddressSet;

  constructor(
    private readonly table: TrunkTable,
    private readonly trunks: TrunkConfig[],
    trustedProxies: readonly string[],
    private readonly bySource: (inv: InviteLike) => TrunkConfig | undefined,
    private readonly log: Logger,
  ) {
    this.proxies = new AddressSet(trustedProxies);
  }

  isProxy(address: string): boolean {
    return this.proxies.has(address);
  }

  /** The INVITE's trunk; a refusal (403 with `reason`) is logged on `log` (the INVITE's logger). */
  resolve(inv: InviteLike, log: Logger = this.log): TrunkIdentity {
    const named = inv.header(TRUNK_HEADER)?.trim();
    const fromProxy = named !== undefined && this.proxies.has(inv.source.address);
    if (named !== undefined && !fromProxy)
      log.warn({ named: named.slice(0, 64) }, `${TRUNK_HEADER} from an address that is no trusted proxy: ignored`);
    const trunk = fromProxy ? undefined : this.bySource(inv);
    const r: TrunkIdentity = fromProxy
      ? this.fromProxy(named, inv)
      : trunk
        ? { ok: true, trunk, via: 'source' }
        : { ok: false, reason: 'Forbidden (unknown source address)', why: 'no trunk allows this address' };
    if (!r.ok) log.warn({ why: r.why }, `INVITE refused: 403 ${r.reason}`);
    return r;
  }

  private fromProxy(named: string, inv: InviteLike): TrunkIdentity {
    const trunk = this.trunks.find((t) => t.name === named);
    if (!trunk)
      return { ok: false, reason: 'Forbidden (unknown trunk)', why: `the proxy named trunk "${named.slice(0, 64)}"` };
    const carrier = inv.header(SOURCE_HEADER)?.trim() ?? '';
    if (!this.table.covers(trunk.name, carrier))
      return {
        ok: false,
        reason: 'Forbidden (trunk does not allow the carrier address)',
        why: `trunk ${trunk.name} does not allow the carrier address "${carrier.slice(0, 64)}" the proxy reported`,
      };
    return { ok: true, trunk, via: 'proxy' };
  }
}

/** The front's resolver: address trunks, then registration trunks (by Request-URI), proxies as configured. */
export function trunkResolver(
  config: GatewayConfig,
  log: Logger,
  registrations: () => TrunkRegistrations | undefined,
): TrunkResolver {
  const table = new TrunkTable(config.trunks);
  const bySource = (inv: InviteLike) =>
    table.match(inv.source.address) ??
    registrations()?.matchInvite(userOf(inv.requestUri), inv.source.address, config.trunks);
  return new TrunkResolver(table, config.trunks, config.sip.trustedProxies, bySource, log);
}
