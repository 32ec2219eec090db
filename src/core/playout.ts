/**
 * Playout buffer for AI audio on its way to a leg. AI backends deliver audio in bursts of any
 * size; the bridge pulls exactly one 20 ms frame per clock tick. Chunks keep the id of the
 * response item they belong to, so that on barge-in we know how many milliseconds of that item
 * the caller actually heard (what `conversation.item.truncate` needs).
 *
 * Adaptive prebuffer. While a response is still streaming (`streaming`), a frame is only played
 * when a whole one is queued: a partial frame is never padded with silence mid-reply. A model
 * that streams slower than real time (or in odd-sized chunks) would otherwise leave a hole in
 * the audio every few frames (measured: 52 holes in a 5 s reply at 0.9x). Instead, playback
 * starts once `targetMs` is queued and, when it runs dry mid-reply (an underrun), waits until
 * the target is queued again, with the target raised: doubled, or to what the arrival rate
 * measured in this reply says the next REFILL_HORIZON_MS of playback will lack, whichever is
 * larger (capped at MAX_TARGET_MS). A slow model thus costs one or two short pauses in its first
 * reply instead of dozens of 20 ms holes, and later replies on the call start with the learned
 * target. Added latency stays small: the base target is 40 ms, which a model streaming faster
 * than real time (OpenAI's usual 100 ms+ deltas) fills with its first delta, so it adds nothing;
 * a reply that plays through without an underrun lowers the target by a quarter toward the base.
 * When the response is done (`streaming` false) whatever is left plays out at once, the tail
 * padded.
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

export interface PlayoutStats {
  /** Mid-reply underruns: the buffer ran dry while the response was still streaming. */
  underruns: number;
  /** Ticks without AI audio inside a reply (after its first frame played, before it finished). */
  holeFrames: number;
  /** Ticks spent filling the prebuffer before a reply's first frame (the latency it added). */
  prebufferFrames: number;
}

const BASE_TARGET_MS = 40;
const MAX_TARGET_MS = 640;
/** After an underrun, queue enough to cover this much playback at the measured arrival rate. */
const REFILL_HORIZON_MS = 6000;

export class PlayoutBuffer {
  private readonly queue: Chunk[] = [];
  private queuedBytes = 0;
  private readonly playedBytes = new Map<string, number>();
  private lastItem: string | undefined;
  private streamingNow = false;
  /** Playing (true) or filling the prebuffer (false) while streaming. */
  private playing = false;
  /** This reply had an underrun (so the target is not relaxed when it ends). */
  private underrunInReply = false;
  /** A frame of this reply has been played. */
  private startedReply = false;
  /**
   * Arrival of the current reply, for the rate estimate: when its first chunk came, and the bytes
   * that came after it (the first chunk arrived "at once" and would overstate the rate).
   */
  private replyStartAt: number | undefined;
  private replyBytes = 0;
  targetMs = BASE_TARGET_MS;
  readonly stats: PlayoutStats = { underruns: 0, holeFrames: 0, prebufferFrames: 0 };

  /**
   * @param frameSize bytes in one 20 ms frame of the AI output format
   * @param bytesPerMs bytes per millisecond of that format
   * @param now clock for the arrival-rate estimate (ms)
   */
  constructor(
    readonly frameSize: number,
    private readonly bytesPerMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * A response is being generated (true) or has finished (false). While true, partial frames
   * wait for the rest instead of being padded.
   */
  set streaming(on: boolean) {
    if (on === this.streamingNow) return;
    this.streamingNow = on;
    if (on) {
      this.playing = false;
      this.underrunInReply = false;
      this.startedReply = false;
      this.replyStartAt = undefined;
      this.replyBytes = 0;
    } else if (this.startedReply && !this.underrunInReply) {
      this.targetMs = Math.max(BASE_TARGET_MS, Math.round(this.targetMs * 0.75));
    }
  }

  get streaming(): boolean {
    return this.streamingNow;
  }

  push(data: Buffer, itemId?: string): void {
    if (data.length === 0) return;
    this.queue.push({ data, offset: 0, itemId });
    this.queuedBytes += data.length;
    if (this.streamingNow) {
      if (this.replyStartAt === undefined) this.replyStartAt = this.now();
      else this.replyBytes += data.length;
    }
  }

  get bufferedMs(): number {
    return this.queuedBytes / this.bytesPerMs;
  }

  get empty(): boolean {
    return this.queuedBytes === 0;
  }

  /**
   * One full frame, or null when there is nothing to play this tick. After a response, the tail
   * is padded with `pad` bytes; while it streams, null until a whole frame (and the prebuffer
   * target) is queued.
   */
  pull(pad: number = 0): Buffer | null {
    if (this.streamingNow) {
      const frameMs = this.frameSize / this.bytesPerMs;
      if (!this.playing) {
        if (this.queuedBytes > 0 && this.bufferedMs >= Math.max(this.targetMs, frameMs)) this.playing = true;
        else {
          if (this.queuedBytes > 0 || this.startedReply) {
            if (this.startedReply) this.stats.holeFrames++;
            else this.stats.prebufferFrames++;
          }
          return null;
        }
      } else if (this.queuedBytes < this.frameSize) {
        this.underrun(frameMs);
        return null;
      }
      this.startedReply = true;
    }
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

  /** Ran dry mid-reply: refill to a higher target (see the class comment). */
  private underrun(frameMs: number): void {
    this.stats.underruns++;
    this.stats.holeFrames++;
    this.playing = false;
    this.underrunInReply = true;
    let wanted = this.targetMs * 2;
    if (this.replyStartAt !== undefined) {
      const elapsed = this.now() - this.replyStartAt;
      const rate = elapsed > 0 ? this.replyBytes / this.bytesPerMs / elapsed : 1;
      if (rate < 1) wanted = Math.max(wanted, (1 - rate) * REFILL_HORIZON_MS);
    }
    this.targetMs = Math.min(MAX_TARGET_MS, Math.max(frameMs, Math.round(wanted)));
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
    this.playing = false;
    return { itemId: current, playedMs: current ? this.playedMs(current) : 0 };
  }
}
