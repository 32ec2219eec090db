/** Per-item audio lengths kept for barge-in truncation; older items can no longer be interrupted. */
const MAX_TRACKED_ITEMS = 32;

/**
 * How much model audio each output item carried, and which items are complete: what a barge-in
 * may cut with `conversation.item.truncate` (bounded to the newest MAX_TRACKED_ITEMS items).
 */
export class OutputItems {
  private readonly itemMs = new Map<string, number>();
  private readonly itemDone = new Set<string>();

  addAudio(itemId: string, ms: number): void {
    if (!this.itemMs.has(itemId) && this.itemMs.size >= MAX_TRACKED_ITEMS) {
      const oldest = this.itemMs.keys().next().value!;
      this.itemMs.delete(oldest);
      this.itemDone.delete(oldest);
    }
    this.itemMs.set(itemId, (this.itemMs.get(itemId) ?? 0) + ms);
  }

  markDone(itemId: string): void {
    this.itemDone.add(itemId);
  }

  /**
   * Where to truncate `itemId` after the caller heard `playedMs` of it, or undefined when there is
   * nothing to cut (unknown item, or a complete item heard to its end).
   */
  truncateAt(itemId: string | undefined, playedMs: number): number | undefined {
    const received = itemId !== undefined ? this.itemMs.get(itemId) : undefined;
    if (itemId === undefined || received === undefined) return undefined;
    const end = Math.max(0, Math.min(Math.round(playedMs), Math.floor(received)));
    const heardAll = this.itemDone.has(itemId) && end >= Math.floor(received) - 1;
    return heardAll ? undefined : end;
  }
}
