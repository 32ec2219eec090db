import type { TrunkConfig } from '../config/schema.js';
import type { Logger } from '../core/logger.js';
import type { EmbeddedSipEngine } from './embedded.js';
import {
  TrunkRegistration,
  type RegistrarLink,
  type RegistrationEvents,
  type RegistrationStatus,
} from './registration.js';
import { resolveSipTargets, type SipDnsResolver, type SipTarget, type SipTransport } from './srv.js';

const FLOW_CONNECT_TIMEOUT_MS = 5000;

/**
 * The registration trunks of one SIP front: a TrunkRegistration per trunk with a `register`
 * block, all over the embedded engine (RegistrarLink is implemented here, on its client
 * transactions, held flows and learnt public address).
 */
export class TrunkRegistrations {
  private readonly regs = new Map<string, TrunkRegistration>();
  /** UDP: the NAT-mapped port the registrar saw (rport), used in our registered Contact. */
  private readonly learntUdpPort = new Map<string, number>();

  constructor(
    engine: EmbeddedSipEngine,
    trunks: TrunkConfig[],
    log: Logger,
    events: RegistrationEvents = {},
    resolver?: SipDnsResolver,
  ) {
    for (const t of trunks) {
      const r = t.register;
      if (!r) continue;
      const link: RegistrarLink = {
        request: (req, target, timeoutMs) => engine.request(req, { ...target }, timeoutMs),
        resolve: (uri, transport) => resolveSipTargets(uri, { transport, resolver }),
        holdFlow: (target, onClose) => engine.transports.holdFlow({ ...target }, FLOW_CONNECT_TIMEOUT_MS, onClose),
        sendRaw: (buf, target) => engine.sendRaw(buf, { ...target }),
        advertised: (transport: SipTransport) => ({
          address: engine.publicAddress,
          port: (transport === 'udp' ? this.learntUdpPort.get(t.name) : undefined) ?? engine.portFor(transport),
        }),
        get publicAddressFixed() {
          return engine.publicAddressFixed;
        },
        learnPublicAddress: (address, port, transport) => {
          engine.learnPublicAddress(address);
          if (transport === 'udp') this.learntUdpPort.set(t.name, port);
        },
        userAgent: engine.userAgent,
      };
      this.regs.set(t.name, new TrunkRegistration({ trunk: t.name, ...r }, link, log, events));
    }
  }

  get size(): number {
    return this.regs.size;
  }

  start(): void {
    for (const r of this.regs.values()) r.start();
  }

  /** Un-REGISTER every trunk (Expires: 0), in parallel; each is bounded by its own timeout. */
  async stop(): Promise<void> {
    await Promise.all([...this.regs.values()].map((r) => r.stop()));
  }

  status(trunk: string): RegistrationStatus | undefined {
    return this.regs.get(trunk)?.snapshot();
  }

  list(): RegistrationStatus[] {
    return [...this.regs.values()].map((r) => r.snapshot());
  }

  /** Whether an address is one a registrar of ours resolved to (requests from it pass the source check). */
  isRegistrarSource(address: string): boolean {
    const a = address.startsWith('::ffff:') ? address.slice(7) : address;
    for (const r of this.regs.values()) if (r.registrarAddresses.has(a)) return true;
    return false;
  }

  /**
   * The registration trunk an INVITE is addressed to: its Request-URI user is the Contact user we
   * registered (or the AoR username). With `requireRegistrarSource`, only from the registrar's address.
   */
  matchInvite(requestUser: string, source: string, trunks: TrunkConfig[]): TrunkConfig | undefined {
    if (!requestUser) return undefined;
    const src = source.startsWith('::ffff:') ? source.slice(7) : source;
    for (const t of trunks) {
      const reg = this.regs.get(t.name);
      if (!reg || (t.match ?? 'both') === 'ip') continue;
      if (requestUser !== reg.contactUser && requestUser !== reg.username) continue;
      if (t.register?.requireRegistrarSource && !reg.registrarAddresses.has(src)) continue;
      return t;
    }
    return undefined;
  }
}

export type { RegistrationStatus, SipTarget };
