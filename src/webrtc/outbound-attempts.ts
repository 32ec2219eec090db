/** What an unconfirmed business-initiated call is matched by. */
export interface AttemptKey {
  /** Our gateway call id, sent to Meta as `biz_opaque_callback_data`. */
  callId: string;
  phoneNumberId: string;
  /** The user's number, digits only. */
  user: string;
}

/** What a webhook says about a call whose id we may not know. */
export interface EventClues {
  phoneNumberId: string | undefined;
  opaque: string | undefined;
  user: string | undefined;
}

/**
 * Business-initiated calls whose Graph `connect` may have placed the call but whose response (with
 * Meta's call id) never reached us. We never send `connect` again (the user would ring twice);
 * instead the call's webhooks are matched to the attempt: by the `biz_opaque_callback_data` Meta
 * echoes when it carries one (then only by it), else by business number + user number when exactly one attempt to
 * that user is unconfirmed (two would be ambiguous, so neither is guessed).
 */
export class OutboundAttempts<T> {
  private readonly attempts = new Map<string, { key: AttemptKey; value: T }>();

  add(key: AttemptKey, value: T): void {
    this.attempts.set(key.callId, { key, value });
  }

  delete(callId: string): void {
    this.attempts.delete(callId);
  }

  get size(): number {
    return this.attempts.size;
  }

  /** Take the attempt this event belongs to (it is confirmed from now on), if any. */
  claim(ev: EventClues): T | undefined {
    let hit = ev.opaque ? this.attempts.get(ev.opaque) : undefined;
    if (hit && ev.phoneNumberId && hit.key.phoneNumberId !== ev.phoneNumberId) hit = undefined;
    // Opaque data names one call: an event naming another call is never matched by user number.
    if (!hit && ev.user && !ev.opaque) {
      const user = ev.user.replace(/^\+/, '');
      const same = [...this.attempts.values()].filter(
        (a) => a.key.user === user && (!ev.phoneNumberId || a.key.phoneNumberId === ev.phoneNumberId),
      );
      if (same.length === 1) hit = same[0];
    }
    if (!hit) return undefined;
    this.attempts.delete(hit.key.callId);
    return hit.value;
  }
}
