/**
 * G.711 packetisation both ways. The gateway moves 20 ms frames; carriers send and want packets of
 * any multiple of 10 ms (a=ptime 10/20/30/40/60). Receiving, the RTP timestamp says where each
 * sample belongs, so packets are cut or joined into 20 ms frames by timestamp (a 30 ms packet ends
 * half-way through a frame that the next packet completes). Sending, 20 ms frames are cut or
 * joined into packets of the peer's ptime. Written here: no maintained library re-frames G.711
 * RTP for a pull-based 20 ms bridge.
 */

export const FRAME_SAMPLES = 160; // 20 ms at 8 kHz, one byte per sample

/** Largest payload we take: 60 ms of G.711 (RFC 3551's largest common ptime). */
export const MAX_PAYLOAD = 480;

/** A G.711 payload we can re-frame: a whole number of 10 ms blocks, 10 to 60 ms. */
export const acceptablePayload = (bytes: number): boolean => bytes >= 80 && bytes <= MAX_PAYLOAD && bytes % 80 === 0;

export interface RxFrame {
  /** Frame number from the stream start (continuous across re-bases); its low 16 bits act as RTP seq. */
  index: number;
  /** RTP timestamp of the frame's first sample. */
  timestamp: number;
  payload: Buffer;
  /** Where the frame starts relative to the packet that completed it (ms, may be negative). */
  offsetMs: number;
}

/** A timestamp jump beyond this (1 s) is a new timeline (restart, SBC failover), not loss. */
const REBASE_SAMPLES = 50 * FRAME_SAMPLES;
/** Half-filled frames kept waiting for their other part; older ones are played padded. */
const MAX_PARTIAL = 4;

interface Partial {
  buf: Buffer;
  covered: Uint8Array;
  filled: number;
}

/** Received packets (any multiple of 10 ms) → 20 ms frames, keyed by RTP timestamp. */
export class RxReframer {
  private base: number | undefined; // RTP timestamp of frame 0
  private newest = -1; // highest frame index that has received samples
  private rebaseNext = false;
  private readonly partial = new Map<number, Partial>();
  late = 0;

  constructor(private readonly silenceByte: number) {}

  /** The stream restarted (new SSRC, new source): its next packet continues right after the last frame. */
  restart(): void {
    this.rebaseNext = true;
  }

  /** The complete 20 ms frames this packet finishes (oldest first), plus any stale partial frames. */
  push(timestamp: number, payload: Buffer): RxFrame[] {
    const out: RxFrame[] = [];
    if (this.base === undefined) this.base = timestamp;
    let rel = (timestamp - this.base) | 0; // signed: a packet slightly older than frame 0 is late
    const expected = (this.newest + 1) * FRAME_SAMPLES;
    if (this.rebaseNext || (this.newest >= 0 && Math.abs(rel - expected) > REBASE_SAMPLES)) {
      this.rebaseNext = false;
      this.flushPartials(Infinity, out);
      this.base = (timestamp - expected) >>> 0;
      rel = expected;
    }
    if (rel < 0) {
      this.late++;
      return out;
    }
    const end = rel + payload.length;
    for (let pos = rel; pos < end;) {
      const index = Math.floor(pos / FRAME_SAMPLES);
      const start = pos - index * FRAME_SAMPLES;
      const n = Math.min(FRAME_SAMPLES - start, end - pos);
      const chunk = payload.subarray(pos - rel, pos - rel + n);
      if (n === FRAME_SAMPLES) out.push(this.frame(index, chunk, rel));
      else this.fill(index, start, chunk, rel, out);
      if (index > this.newest) this.newest = index;
      pos += n;
    }
    this.flushPartials(this.newest - 2, out);
    return out.length > 1 ? out.sort((a, b) => a.index - b.index) : out;
  }

  private frame(index: number, payload: Buffer, packetRel: number): RxFrame {
    return {
      index,
      timestamp: (this.base! + index * FRAME_SAMPLES) >>> 0,
      payload,
      offsetMs: (index * FRAME_SAMPLES - packetRel) / 8,
    };
  }

  private fill(index: number, start: number, chunk: Buffer, packetRel: number, out: RxFrame[]): void {
    let p = this.partial.get(index);
    if (!p) {
      p = { buf: Buffer.alloc(FRAME_SAMPLES, this.silenceByte), covered: new Uint8Array(FRAME_SAMPLES), filled: 0 };
      this.partial.set(index, p);
    }
    chunk.copy(p.buf, start);
    for (let i = start; i < start + chunk.length; i++) {
      if (!p.covered[i]) {
        p.covered[i] = 1;
        p.filled++;
      }
    }
    if (p.filled === FRAME_SAMPLES) {
      this.partial.delete(index);
      out.push(this.frame(index, p.buf, packetRel));
    } else if (this.partial.size > MAX_PARTIAL) {
      this.flushPartials(Math.min(...this.partial.keys()) + 1, out);
    }
  }

  /** Partial frames below `before` will not be completed: play them with silence where parts are missing. */
  private flushPartials(before: number, out: RxFrame[]): void {
    for (const [index, p] of this.partial) {
      if (index >= before) continue;
      this.partial.delete(index);
      out.push(this.frame(index, p.buf, index * FRAME_SAMPLES));
    }
  }
}

export interface TxPacket {
  timestamp: number;
  payload: Buffer;
}

/** 20 ms frames → packets of the peer's ptime (10 ms: two packets per frame; 60 ms: one per three frames). */
export class TxPacketizer {
  private pending: Buffer | undefined;
  private pendingTs = 0;
  readonly bytesPerPacket: number;

  constructor(ptimeMs: number) {
    this.bytesPerPacket = Math.round(ptimeMs * 8);
  }

  /** Add one frame whose first sample has RTP timestamp `timestamp`; returns the packets now due. */
  push(frame: Buffer, timestamp: number): TxPacket[] {
    if (!this.pending) this.pendingTs = timestamp;
    let data = this.pending ? Buffer.concat([this.pending, frame]) : frame;
    const out: TxPacket[] = [];
    while (data.length >= this.bytesPerPacket) {
      out.push({ timestamp: this.pendingTs, payload: data.subarray(0, this.bytesPerPacket) });
      this.pendingTs = (this.pendingTs + this.bytesPerPacket) >>> 0;
      data = data.subarray(this.bytesPerPacket);
    }
    this.pending = data.length > 0 ? Buffer.from(data) : undefined;
    return out;
  }

  /** Drop audio not yet sent (DTMF replaces it, or sending stopped for hold). */
  clear(): void {
    this.pending = undefined;
  }
}

/**
 * One 20 ms frame of comfort noise (RFC 3389) at `levelDbov` (0 = full scale, 127 = none) as
 * 16-bit PCM: white noise, which is what a receiver without spectral parameters may play.
 */
export function comfortNoisePcm(levelDbov: number): Int16Array {
  const rms = 32767 * 10 ** (-Math.min(127, Math.max(30, levelDbov)) / 20);
  const amp = rms * Math.sqrt(3); // uniform noise of this amplitude has that RMS
  const pcm = new Int16Array(FRAME_SAMPLES);
  for (let i = 0; i < pcm.length; i++) pcm[i] = Math.round((Math.random() * 2 - 1) * amp);
  return pcm;
}
