import type { Logger } from '../../core/logger.js';
import type { GatewayContext } from '../../gateway.js';
import { gatewayCallIdOf } from './backend.js';
import { parseIncoming, type RealtimeCallIncoming } from './webhook.js';

/**
 * OpenAI SIP calls across instances (issue 14). The instance that dials OpenAI owns the call in
 * cluster state under the id our X-Gateway-Call-Id header carries; OpenAI's `realtime.call.incoming`
 * webhook reaches whichever instance the load balancer picks. One that has no such call pending
 * looks the id up and hands the event to its owner over the peer link (the same mechanism as
 * WhatsApp's forwarded events); the owner accepts it with its own backend and opens the sideband.
 */

/** Where the owner takes a forwarded event, below /internal/cluster. */
const forwardPath = (projectId: string) => `/openai/${encodeURIComponent(projectId)}/incoming`;

/** This instance's side of matching, per OpenAI project. */
export interface LocalMatcher {
  /** True when a call of ours is dialing OpenAI under the event's X-Gateway-Call-Id. */
  owns(event: RealtimeCallIncoming): boolean;
  /** Accepts the call (OpenAI REST accept, sideband); true when it was ours. */
  deliver(event: RealtimeCallIncoming): Promise<boolean>;
}

/**
 * The owner's endpoint: 200 once it knows the call is pending here (the accept then runs in the
 * background, so a slow OpenAI REST call never looks like a lost owner to the sender), 404 when not.
 */
export function acceptForwardedIncoming(
  ctx: GatewayContext,
  projectId: string,
  matcher: LocalMatcher,
  log: Logger,
): void {
  ctx.internal.post(forwardPath(projectId), (req, res) => {
    const event = parseIncoming(req.body);
    if (!event) {
      res.status(400).json({ error: { code: 'invalid_request', message: 'a realtime.call.incoming event' } });
      return;
    }
    if (!matcher.owns(event)) {
      res.status(404).json({ error: { code: 'not_found', message: `no pending call for ${event.data.call_id}` } });
      return;
    }
    res.status(200).json({ ok: true });
    log.info(
      { openAiCallId: event.data.call_id, from: req.get('x-cluster-forwarded-by') },
      'OpenAI incoming call forwarded by another instance',
    );
    matcher
      .deliver(event)
      .catch((err: Error) =>
        log.error({ openAiCallId: event.data.call_id, err: err.message }, 'forwarded OpenAI incoming call failed'),
      );
  });
}

/**
 * An event no call here is waiting for: when another instance owns the call it names, hand it over.
 * True when the owner took it; false when it is nobody's (or the owner is gone), so the caller's
 * `unmatched` policy applies.
 */
export async function forwardIncoming(
  ctx: GatewayContext,
  projectId: string,
  event: RealtimeCallIncoming,
  log: Logger,
): Promise<boolean> {
  const { cluster, peers } = ctx;
  const callId = gatewayCallIdOf(event);
  if (!cluster.shared || !callId) return false;
  const openAiCallId = event.data.call_id;
  const owner = await cluster.ownerOf(callId).catch((err: Error) => {
    log.warn({ openAiCallId, callId, err: err.message }, 'cluster state lookup failed for an OpenAI call');
    return undefined;
  });
  if (!owner || owner.instanceId === cluster.instanceId) return false;
  try {
    const r = await peers.send(owner.instanceId, 'POST', `/internal/cluster${forwardPath(projectId)}`, event);
    log.info(
      { openAiCallId, callId, owner: owner.instanceId, status: r.status },
      'OpenAI incoming call forwarded to the instance that dialed it',
    );
    return r.status === 200;
  } catch (err) {
    log.warn(
      { openAiCallId, callId, owner: owner.instanceId, err: (err as Error).message },
      'OpenAI incoming call could not be forwarded to its owner',
    );
    return false;
  }
}
