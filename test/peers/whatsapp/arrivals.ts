import type { Arrival } from './user.js';

/** Opus' dynamic payload type in the WhatsApp user's offer (telephone-event packets are excluded). */
const OPUS_PT = 111;

/**
 * Opus packets a WhatsApp user received at or after `from` (performance.now()). Cheap to poll (no
 * decoding): tests wait until enough audio has arrived, since media starts late on a loaded box.
 */
export function opusSince(user: { readonly arrivals: readonly Arrival[] }, from = 0): number {
  let n = 0;
  for (const a of user.arrivals) if (a.payloadType === OPUS_PT && a.at >= from) n++;
  return n;
}
