/**
 * Playout buffer for AI audio on its way to a leg. AI backends deliver audio in bursts of any
 * size; the bridge pulls exactly one 20 ms frame per clock tick. Chunks keep the id of the
 * response item they belong to, so that on barge-in we know how many milliseconds of that item
 * the caller actually heard (what `conversation.item.truncate` needs).
 */
interface Chunk {
  data: Buffer;
  offset: number;
  itemId: string | undefined;
}

export interface PlayedMark {
  itemId: string | undefined;
  playedMs: number;
}

export class PlayoutBuffer {
  private readonly queue: Chunk[] = [];
  private queuedBytes = 0;
  private readonly playedBytes = new Map<string, number>();
  private lastItem: string | undefined;

  /**
   * @param frameSize bytes in one 20 ms frame of the AI output format
   * @param bytesPerMs bytes per millisecond of that format
   */
  constructor(
    readonly frameSize: number,
    private readonly bytesPerMs: number,
  ) {}

  push(data: Buffer, itemId?: string): void {
    if (data.length === 0) return;
    this.queue.push({ data, offset: 0, itemId });
    this.queuedBytes += data.length;
  }

  get bufferedMs(): number {
    return this.queuedBytes / this.bytesPerMs;
  }

  get empty(): boolean {
    return this.queuedBytes === 0;
  }

  /** One full frame, padded with `pad` bytes at the tail of a response; null when empty. */
  pull(pad: number = 0): Buffer | null {
    if (this.queuedBytes === 0) return null;
    const out = Buffer.alloc(this.frameSize, pad);
    let filled = 0;
    while (filled < this.frameSize && this.queue.length > 0) {
      const c = this.queue[0]!;
      const n = Math.min(this.frameSize - filled, c.data.length - c.offset);
      c.data.copy(out, filled, c.offset, c.offset + n);
      filled += n;
      c.offset += n;
      this.queuedBytes -= n;
      if (c.itemId !== undefined) {
        this.playedBytes.set(c.itemId, (this.playedBytes.get(c.itemId) ?? 0) + n);
        this.lastItem = c.itemId;
      }
      if (c.offset === c.data.length) this.queue.shift();
    }
    return out;
  }

  /** Milliseconds of an item handed to the leg so far. */
  playedMs(itemId: string): number {
    return Math.floor((this.playedBytes.get(itemId) ?? 0) / this.bytesPerMs);
  }

  /** Drop everything queued at once (barge-in); returns how much of the item in progress was heard. */
  clear(): PlayedMark {
    const current = this.queue.find((c) => c.itemId !== undefined)?.itemId ?? this.lastItem;
    this.queue.length = 0;
    this.queuedBytes = 0;
    return { itemId: current, playedMs: current ? this.playedMs(current) : 0 };
  }
}
