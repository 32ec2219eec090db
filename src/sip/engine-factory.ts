import client from 'prom-client';
import { GatewayError } from '../core/errors.js';
import type { GatewayContext } from '../gateway.js';
import { DrachtioEngine } from './drachtio/engine.js';
import { EmbeddedSipEngine } from './embedded.js';
import type { SipEngine } from './engine.js';
import type { SipLadder } from './ladder.js';
import { AddressSet } from './media-source.js';
import { TrunkTable } from './trunks.js';

// Which SIP stack the front runs on (sip.engine), configured from the gateway's config.

/**
 * `registrarSource`: whether an address is one of our registrars (registration trunks with
 * `requireRegistrarSource` take INVITEs only from there).
 */
export function createEngine(
  ctx: GatewayContext,
  registrarSource: (address: string) => boolean = () => false,
  ladder?: SipLadder,
): SipEngine {
  const sip = ctx.config.sip;
  const log = ctx.log.child({ front: 'sip' });
  if (sip.engine === 'drachtio') {
    if (!sip.drachtio) throw new GatewayError('config_invalid', 'sip.engine is drachtio but sip.drachtio is not set');
    if (sip.tls)
      throw new GatewayError(
        'config_invalid',
        "sip.tls is the embedded engine's TLS listener; with sip.engine drachtio put the TLS contact and certificate in drachtio-server's config",
      );
    return new DrachtioEngine({ ...sip.drachtio, log });
  }
  // The trunk check runs in the engine, before any transaction state (flood resistance).
  const trunks = new TrunkTable(ctx.config.trunks);
  // Registration trunks matched by Request-URI take INVITEs from any address (the documented
  // trade-off) unless they require the registrar's addresses.
  const byRegistration = ctx.config.trunks.filter((t) => t.register && (t.match ?? 'both') !== 'ip');
  const fromAnywhere = byRegistration.some((t) => !t.register!.requireRegistrarSource);
  const rejected = sipRejectionCounter(ctx.metrics.registry);
  // The edge proxy sends every carrier's INVITEs from its own address (see trunk-identity.ts).
  const proxies = new AddressSet(sip.trustedProxies);
  return new EmbeddedSipEngine({
    host: sip.host,
    port: sip.port,
    publicAddress: sip.publicAddress,
    publicAddress6: sip.publicAddress6,
    log,
    tls: sip.tls,
    webSocket: ctx.config.browser.enabled ? { maxConnections: ctx.config.browser.maxConnections } : undefined,
    isKnownSource: (address) =>
      trunks.match(address) !== undefined ||
      fromAnywhere ||
      proxies.has(address) ||
      (byRegistration.length > 0 && registrarSource(address)),
    unknownSource: sip.unknownSource,
    limits: sip.limits,
    onReject: (reason, method) => rejected.inc({ reason, method: METHODS.has(method) ? method : 'other' }),
    onTrace: ladder && ((dir, buf, peer) => ladder.record(dir, buf, peer)),
  });
}

/** Method label values (a stranger's method names must not grow the label set). */
const METHODS = new Set(['INVITE', 'REGISTER', 'OPTIONS', 'ACK', 'CANCEL', 'BYE']);

function sipRejectionCounter(registry: client.Registry): client.Counter<'reason' | 'method'> {
  const name = 'gateway_sip_requests_rejected_total';
  return (
    (registry.getSingleMetric(name) as client.Counter<'reason' | 'method'> | undefined) ??
    new client.Counter({
      name,
      help: 'SIP requests refused before any state: unknown_source, rate_limited (per source) or overload (caps)',
      labelNames: ['reason', 'method'],
      registers: [registry],
    })
  );
}
