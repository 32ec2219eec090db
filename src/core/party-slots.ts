import { randomUUID } from 'node:crypto';
import type { Call } from './call.js';
import { admitCall, type ClusterState, type Slot } from './cluster-state.js';
import { GatewayError } from './errors.js';
import type { MediaLeg } from './media-leg.js';

/**
 * The second leg of a bridged transfer is a call on the trunk / front it goes out on, so it takes a
 * slot in that cap like any other call (a trunk with `maxCalls: 30` carries 30 legs, whoever placed
 * them). The slot is held under its own id (`<call id>/party-<random>`): the caller's leg may hold one in
 * the same counter already. Taken before anything is dialled; freed when the dial fails, the
 * person's leg closes, or the call ends, whichever comes first. A full cap rejects with
 * `limit_reached` naming it, which the handoff reports as `no_capacity`.
 */
export async function withPartySlot(
  cluster: ClusterState,
  call: Call,
  slots: (Slot & { why: string })[],
  dial: () => Promise<MediaLeg>,
): Promise<MediaLeg> {
  const holder = `${call.id}/party-${randomUUID().slice(0, 8)}`;
  const admission = await admitCall(cluster, holder, slots);
  if (!admission.ok) {
    const detail =
      'full' in admission
        ? slots.find((s) => s.key === admission.full)!.why
        : `cluster state unavailable (${admission.unavailable})`;
    throw new GatewayError('limit_reached', detail, call.id, {
      details: { slot: 'full' in admission ? admission.full : undefined },
    });
  }
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await cluster
      .release(holder)
      .catch((err: Error) => call.log.warn({ err: err.message, holder }, 'slot release failed'));
  };
  call.onEnd(release);
  let leg: MediaLeg;
  try {
    leg = await dial();
  } catch (err) {
    await release();
    throw err;
  }
  leg.once('closed', () => void release());
  return leg;
}
