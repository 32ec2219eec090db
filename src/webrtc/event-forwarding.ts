import type { Logger } from '../core/logger.js';
import type { GatewayContext } from '../gateway.js';
import type { CallEvent } from './webhook.js';

/** Where another instance forwards a call event for a call this one owns. */
const FORWARD_PATH = '/whatsapp/events';

/**
 * Accepts events other instances received for calls we own (the load balancer picked them, not
 * us). A `connect` offer is never forwarded: the instance that received it takes the call.
 */
export function acceptForwardedEvents(
  ctx: GatewayContext,
  log: Logger,
  holds: (waCallId: string) => boolean,
  onEvent: (ev: CallEvent) => Promise<void>,
): void {
  ctx.internal.post(FORWARD_PATH, (req, res) => {
    const ev = req.body as CallEvent;
    if (!ev || typeof ev.waCallId !== 'string' || typeof ev.kind !== 'string') {
      res.status(400).json({ error: { code: 'invalid_request', message: 'a WhatsApp call event' } });
      return;
    }
    if (ev.kind === 'connect' || !holds(ev.waCallId)) {
      res.status(404).json({ error: { code: 'not_found', message: `no call ${ev.waCallId} here` } });
      return;
    }
    res.status(200).json({ ok: true });
    onEvent(ev).catch((err: Error) =>
      log.error({ waCallId: ev.waCallId, err: err.message }, 'forwarded WhatsApp event failed'),
    );
  });
}

/**
 * An event for a call this instance does not hold: when another instance owns it (cluster state),
 * hand it over. True when the owner took it.
 */
export async function forwardToOwner(ctx: GatewayContext, ev: CallEvent): Promise<boolean> {
  const { cluster, peers, log } = ctx;
  if (!cluster.shared) return false;
  const owner = await cluster.resolve('whatsapp', ev.waCallId).catch(() => undefined);
  if (!owner || owner.instanceId === cluster.instanceId) return false;
  try {
    const r = await peers.send(owner.instanceId, 'POST', `/internal/cluster${FORWARD_PATH}`, ev);
    log.info(
      { waCallId: ev.waCallId, kind: ev.kind, owner: owner.instanceId, status: r.status },
      'WhatsApp event forwarded to the instance that owns the call',
    );
    return r.status === 200;
  } catch (err) {
    log.warn(
      { waCallId: ev.waCallId, kind: ev.kind, owner: owner.instanceId, err: (err as Error).message },
      'WhatsApp event could not be forwarded to its owner',
    );
    return false;
  }
}
