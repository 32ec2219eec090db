import { FRAME_MS } from './audio/format.js';

/** One received RTP packet's audio, as the jitter buffer needs it. */
export interface ReceivedPacket {
  readonly seq: number; // 16-bit RTP sequence number
  readonly timestamp: number; // RTP timestamp (clock-rate units)
  readonly payload: Buffer;
  readonly arrivalMs: number; // local monotonic arrival time
}

export interface JitterStats {
  received: number;
  lost: number; // never arrived in time, concealed
  late: number; // arrived after its slot was played, dropped
  duplicate: number;
  reordered: number;
  concealed: number; // frames synthesised (loss + underrun)
  dropped: number; // frames skipped to bring the depth back down
  underruns: number;
  jitterMs: number; // RFC 3550 interarrival jitter estimate
  depthMs: number; // current target depth
}

export interface JitterBufferOptions {
  clockRate: number;
  /** Produces a stand-in frame; see FrameCodec.conceal. */
  conceal: (last: Buffer | undefined, lost: number) => Buffer;
  minDepthMs?: number;
  maxDepthMs?: number;
  /**
   * Most audio held, in ms (default 1 s): a sender skipping sequence numbers in small steps could
   * otherwise keep every packet alive behind the gaps; the oldest are dropped beyond this.
   */
  capacityMs?: number;
}

/** Conceal at most this many frames in a row; after that the stream is treated as paused. */
const MAX_CONCEAL_FRAMES = 5;
/** A sequence jump this large means the sender restarted: resynchronise instead of concealing. */
const RESYNC_GAP = 100;

/**
 * Adaptive jitter buffer for one inbound RTP stream, popped once per 20 ms by the bridge.
 * Reorders by (wrap-extended) sequence number, drops duplicates and late packets, conceals
 * losses through the codec, and keeps its depth between min and max by following the RFC 3550
 * jitter estimate (depth ≈ 3·jitter + one frame) plus a boost after each underrun that decays.
 */
export class JitterBuffer {
  private readonly frames = new Map<number, Buffer>();
  private minFrames: number;
  private readonly maxFrames: number;
  private readonly capacity: number;
  private readonly opts: JitterBufferOptions;
  private highest = -1; // highest extended seq seen
  private nextSeq = -1; // extended seq of the next frame to play
  private playing = false;
  private lastPlayed: Buffer | undefined;
  private concealRun = 0;
  private boost = 0;
  private popsSinceBoost = 0;
  private popsSinceDrop = 0;
  private prevArrival = 0;
  private prevTimestamp = 0;
  private haveTiming = false;
  private jitter = 0; // ms
  readonly stats: JitterStats = {
    received: 0,
    lost: 0,
    late: 0,
    duplicate: 0,
    reordered: 0,
    concealed: 0,
    dropped: 0,
    underruns: 0,
    jitterMs: 0,
    depthMs: 0,
  };

  constructor(opts: JitterBufferOptions) {
    this.opts = opts;
    this.minFrames = Math.max(1, Math.round((opts.minDepthMs ?? 20) / FRAME_MS));
    this.maxFrames = Math.max(this.minFrames, Math.round((opts.maxDepthMs ?? 120) / FRAME_MS));
    this.capacity = Math.max(this.maxFrames * 2, Math.round((opts.capacityMs ?? 1000) / FRAME_MS));
    this.stats.depthMs = this.minFrames * FRAME_MS;
  }

  private extend(seq: number): number {
    if (this.highest < 0) return seq;
    const cycle = this.highest - (this.highest & 0xffff);
    let ext = cycle + seq;
    if (ext - this.highest > 0x8000) ext -= 0x10000;
    else if (this.highest - ext > 0x8000) ext += 0x10000;
    return ext;
  }

  /** Packets of `ms` arrive at once (ptime above 20 ms): never aim below that much audio. */
  ensureDepthMs(ms: number): void {
    const frames = Math.min(this.maxFrames, Math.ceil(ms / FRAME_MS));
    if (frames > this.minFrames) this.minFrames = frames;
  }

  get targetFrames(): number {
    const fromJitter = Math.ceil((3 * this.jitter) / FRAME_MS) + 1;
    return Math.min(this.maxFrames, Math.max(this.minFrames, fromJitter) + this.boost);
  }

  /** Frames held from the next slot to the newest packet (including gaps). */
  get bufferedFrames(): number {
    return this.nextSeq < 0 || this.highest < this.nextSeq ? 0 : this.highest - this.nextSeq + 1;
  }

  push(pkt: ReceivedPacket): void {
    const ext = this.extend(pkt.seq & 0xffff);
    this.stats.received++;
    if (this.highest >= 0 && Math.abs(ext - this.highest) > RESYNC_GAP) {
      this.haveTiming = false; // a new stream: old arrival times say nothing about its jitter
      this.updateJitter(pkt);
      this.frames.clear();
      this.highest = ext;
      this.nextSeq = ext;
      this.playing = false;
      this.frames.set(ext, pkt.payload);
      return;
    }
    this.updateJitter(pkt);
    if (this.nextSeq >= 0 && ext < this.nextSeq) {
      this.stats.late++;
      return;
    }
    if (this.frames.has(ext)) {
      this.stats.duplicate++;
      return;
    }
    if (ext < this.highest) this.stats.reordered++;
    this.frames.set(ext, pkt.payload);
    if (ext > this.highest) this.highest = ext;
    if (this.nextSeq < 0 || (!this.playing && ext < this.nextSeq)) this.nextSeq = ext;
    this.bound();
  }

  /** Keep at most `capacity` frames' span (highest back to the oldest held): drop what falls out. */
  private bound(): void {
    const floor = this.highest - this.capacity + 1;
    if (this.nextSeq >= floor && this.frames.size <= this.capacity) return;
    for (const seq of this.frames.keys()) {
      if (seq < floor) {
        this.frames.delete(seq);
        this.stats.dropped++;
      }
    }
    if (this.nextSeq < floor) this.nextSeq = floor;
  }

  private updateJitter(pkt: ReceivedPacket): void {
    if (this.haveTiming) {
      const transitDelta =
        pkt.arrivalMs - this.prevArrival - ((pkt.timestamp - this.prevTimestamp) / this.opts.clockRate) * 1000;
      this.jitter += (Math.abs(transitDelta) - this.jitter) / 16;
      this.stats.jitterMs = Math.round(this.jitter * 10) / 10;
    }
    this.haveTiming = true;
    this.prevArrival = pkt.arrivalMs;
    this.prevTimestamp = pkt.timestamp;
  }

  /** The next 20 ms frame, a concealment frame, or null while (re)buffering / paused. */
  pop(): Buffer | null {
    const target = this.targetFrames;
    this.stats.depthMs = target * FRAME_MS;
    if (++this.popsSinceBoost >= 500 && this.boost > 0) {
      this.boost--;
      this.popsSinceBoost = 0;
    }
    if (!this.playing) {
      if (this.frames.size === 0) return null;
      // Resume from the oldest packet held: a gap spent paused is not loss to conceal.
      this.nextSeq = Math.min(...this.frames.keys());
      if (this.bufferedFrames < target) return null;
      this.playing = true;
    }
    // Too deep (jitter fell, or a burst arrived): skip one frame now and then to cut latency.
    if (++this.popsSinceDrop >= 10 && this.bufferedFrames > target + 2 && this.frames.has(this.nextSeq)) {
      this.frames.delete(this.nextSeq);
      this.nextSeq++;
      this.stats.dropped++;
      this.popsSinceDrop = 0;
    }
    const frame = this.frames.get(this.nextSeq);
    if (frame) {
      this.frames.delete(this.nextSeq);
      this.nextSeq++;
      this.concealRun = 0;
      this.lastPlayed = frame;
      return frame;
    }
    if (this.highest > this.nextSeq) {
      // A hole with later packets already here: the packet is lost.
      this.nextSeq++;
      this.stats.lost++;
      return this.concealNext();
    }
    // Underrun: nothing ahead. Hold the slot (the packet may just be late) and deepen the buffer.
    if (this.concealRun === 0) {
      this.stats.underruns++;
      this.boost = Math.min(this.boost + 1, this.maxFrames);
      this.popsSinceBoost = 0;
    }
    if (this.concealRun >= MAX_CONCEAL_FRAMES) {
      this.playing = false; // sender paused (hold, silence suppression): rebuffer when it resumes
      return null;
    }
    return this.concealNext();
  }

  private concealNext(): Buffer {
    this.concealRun++;
    this.stats.concealed++;
    return this.opts.conceal(this.lastPlayed, this.concealRun);
  }
}
