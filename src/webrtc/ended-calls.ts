/**
 * WhatsApp call ids of calls that ended here recently. Meta sends a `terminate` webhook after our
 * own Graph terminate (and redelivers webhooks); such a late event must not be mistaken for news
 * about another call, in particular an unconfirmed business call to the same user. Bounded: the
 * oldest ids are forgotten first (webhooks arrive within seconds, retries within hours at most).
 */
export class EndedCalls {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity = 4096) {}

  add(waCallId: string): void {
    this.ids.delete(waCallId);
    this.ids.add(waCallId);
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value!);
  }

  has(waCallId: string): boolean {
    return this.ids.has(waCallId);
  }
}
