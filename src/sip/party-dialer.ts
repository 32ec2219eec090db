import type { TrunkConfig } from '../config/schema.js';
import { slotKeys, type ClusterState } from '../core/cluster-state.js';
import { GatewayError } from '../core/errors.js';
import type { PartyDialer, PartyRequest } from '../core/leg-dialer.js';
import type { MediaLeg } from '../core/media-leg.js';
import { withPartySlot } from '../core/party-slots.js';
import { canonicalDestination } from '../core/transfer-policy.js';
import type { SipDialer } from './dialer.js';
import { trunkTarget } from './dialer.js';
import { isSipUri } from './header-values.js';
import { outboundIdentity } from './identity.js';
import { AddressSet } from './media-source.js';
import { parseUri } from './message.js';
import type { G711 } from './sdp.js';

const NUMBER = /^\+\d{6,15}$/;

/**
 * The SIP side of bridged transfers: a number goes out through a trunk (its dial URI, number
 * format, caller-ID presentation, credentials and media policy), a sip:/sips: URI is dialled as
 * given. The person is offered the caller's G.711 law first, so a SIP caller to a SIP person is
 * passthrough end to end. A leg through a trunk counts against the trunk's `maxCalls`.
 */
export class SipPartyDialer implements PartyDialer {
  constructor(
    private readonly dialer: SipDialer,
    private readonly trunks: readonly TrunkConfig[],
    private readonly cluster: ClusterState,
  ) {}

  handles(destination: string): boolean {
    const d = canonicalDestination(destination);
    return NUMBER.test(d) || isSipUri(d);
  }

  async dialParty(req: PartyRequest): Promise<MediaLeg> {
    const { call } = req;
    const d = canonicalDestination(req.destination);
    const callerLaw = call.legs[0]?.format.codec;
    const prefer = (codecs: readonly G711[]): G711[] =>
      [...codecs].sort((a, b) => Number(lawOf(b) === callerLaw) - Number(lawOf(a) === callerLaw));
    if (isSipUri(d)) {
      const dialed = await this.dialer.dialLeg(
        {
          call,
          uri: d,
          from: call.info.from,
          to: `<${d}>`,
          headers: {},
          codecs: prefer(['PCMA', 'PCMU']),
          timeoutMs: req.timeoutMs,
        },
        true,
      );
      return dialed.leg;
    }
    if (!NUMBER.test(d)) throw new GatewayError('invalid_request', `cannot dial ${d} over SIP`, call.id);
    const trunk = this.trunkFor(req);
    const uri = trunkTarget(trunk, d);
    if (!parseUri(uri)) throw new GatewayError('config_invalid', `cannot build a SIP URI for ${d}: ${uri}`, call.id);
    // The person sees the original caller's number where the trunk allows it.
    const id = outboundIdentity(trunk, call.info.from, this.dialer.publicAddress);
    const slot = {
      key: slotKeys.trunk(trunk.name),
      max: trunk.maxCalls,
      why: `trunk ${trunk.name} is at its limit of ${trunk.maxCalls} concurrent calls`,
    };
    return withPartySlot(this.cluster, call, [slot], async () => {
      const dialed = await this.dialer.dialLeg(
        {
          call,
          uri,
          from: id.from,
          to: `<${uri}>`,
          headers: id.headers,
          codecs: prefer(trunk.codecs),
          timeoutMs: req.timeoutMs,
        },
        trunk.telephoneEvent,
        new AddressSet(trunk.mediaAllow ?? trunk.allow),
        id.credentials,
      );
      return dialed.leg;
    });
  }

  /** The requested trunk, else the caller's own (SIP calls), else the first configured. */
  private trunkFor(req: PartyRequest): TrunkConfig {
    const name = req.trunk ?? (req.call.info.front === 'sip' ? req.call.info.trunk : undefined);
    const trunk = name ? this.trunks.find((t) => t.name === name) : this.trunks[0];
    if (!trunk)
      throw new GatewayError('not_found', name ? `no trunk "${name}"` : 'no SIP trunk configured', req.call.id);
    return trunk;
  }
}

function lawOf(c: G711): 'pcma' | 'pcmu' {
  return c === 'PCMA' ? 'pcma' : 'pcmu';
}
