import type { Call } from './call.js';

/** How long the AI gets to start and finish its goodbye before the call is cut regardless. */
const GOODBYE_GRACE_MS = 15_000;

/**
 * `limits.maxCallDurationSec`: when a call reaches it, the AI (if it can speak on request) says
 * `goodbye`, the call ends once that has played to the caller (the bridge's hang-up-after-playout),
 * and the front sends BYE/terminate as for any other end. A session that cannot speak, or a
 * goodbye that never comes, ends the call at once / after a grace period.
 */
export function enforceMaxDuration(call: Call, maxMs: number, goodbye: string): void {
  let grace: NodeJS.Timeout | undefined;
  const reason = { by: 'gateway' as const, cause: 'max_duration', detail: `limit ${Math.round(maxMs / 1000)} s` };
  const timer = setTimeout(() => {
    if (call.ended) return;
    call.log.info({ maxMs }, 'maximum call duration reached: ending the call');
    const media = call.media;
    if (!media?.session.say) return void call.end(reason);
    grace = setTimeout(() => void call.end(reason), GOODBYE_GRACE_MS);
    // The goodbye is the next response the session starts; hang up once it has been played.
    media.session.once('response_started', () => media.bridge.hangupAfterPlayout('max_duration'));
    media.session.say(goodbye);
  }, maxMs);
  call.onEnd(() => {
    clearTimeout(timer);
    clearTimeout(grace);
  });
}
