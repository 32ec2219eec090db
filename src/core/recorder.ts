import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './logger.js';
import { followCallAudio, type TapSourceOwner } from './media-tap.js';

/** Frames (20 ms each) allowed to wait for the disk; a disk slower than this stops the recording. */
const MAX_BACKLOG_FRAMES = 500;

/**
 * Stereo WAV of a call: caller on the left, the other side (AI, hold audio, or the person after a
 * bridged transfer) on the right, at one rate for the whole call: the recorder follows the call
 * from bridge to bridge and resamples each to its rate, so a transfer never splits the file. The media
 * path only queues frames; a single write chain puts them on disk asynchronously, and the RIFF
 * sizes are patched on close. Any I/O error (ENOSPC, EIO, a disk too slow for the backlog) stops
 * the recording, closes its file and is reported once: the call itself never notices.
 */
export class CallRecorder {
  private fh: FileHandle | undefined;
  private bytes = 0;
  private readonly rate: number;
  private readonly perFrame: number;
  private chain: Promise<void> = Promise.resolve();
  private backlog = 0;
  private failed = false;
  private closed = false;
  private readonly untap: () => void;
  readonly path: string;

  constructor(
    private readonly dir: string,
    callId: string,
    call: TapSourceOwner,
    /** The WAV's rate (normally the AI's output rate, what the call started with). */
    rate: number,
    private readonly log: Logger,
    private readonly onFailure?: (err: Error) => void,
  ) {
    this.path = join(dir, `${callId}.wav`);
    this.rate = rate;
    this.perFrame = this.rate / 50;
    this.enqueue(async () => {
      await mkdir(this.dir, { recursive: true });
      this.fh = await open(this.path, 'w');
      await this.fh.write(this.header(0), 0, 44, 0);
    });
    this.untap = followCallAudio(call, rate, (caller, other) => this.write(caller, other));
  }

  private header(dataBytes: number): Buffer {
    const h = Buffer.alloc(44);
    h.write('RIFF', 0, 'ascii');
    h.writeUInt32LE(36 + dataBytes, 4);
    h.write('WAVEfmt ', 8, 'ascii');
    h.writeUInt32LE(16, 16);
    h.writeUInt16LE(1, 20); // PCM
    h.writeUInt16LE(2, 22); // stereo
    h.writeUInt32LE(this.rate, 24);
    h.writeUInt32LE(this.rate * 4, 28);
    h.writeUInt16LE(4, 32);
    h.writeUInt16LE(16, 34);
    h.write('data', 36, 'ascii');
    h.writeUInt32LE(dataBytes, 40);
    return h;
  }

  private enqueue(step: () => Promise<void>): void {
    this.chain = this.chain.then(async () => {
      if (this.failed) return;
      try {
        await step();
      } catch (err) {
        await this.fail(err as Error);
      }
    });
  }

  private write(left: Int16Array | null, right: Int16Array | null): void {
    if (this.failed || this.closed) return;
    if (this.backlog >= MAX_BACKLOG_FRAMES) {
      void this.fail(new Error(`disk too slow: ${MAX_BACKLOG_FRAMES} frames waiting`));
      return;
    }
    const frame = Buffer.alloc(this.perFrame * 4);
    for (let i = 0; i < this.perFrame; i++) {
      frame.writeInt16LE(left?.[i] ?? 0, i * 4);
      frame.writeInt16LE(right?.[i] ?? 0, i * 4 + 2);
    }
    this.backlog++;
    this.enqueue(async () => {
      this.backlog--;
      await this.fh!.write(frame, 0, frame.length, 44 + this.bytes);
      this.bytes += frame.length;
    });
  }

  private async fail(err: Error): Promise<void> {
    if (this.failed) return;
    this.failed = true;
    this.untap();
    this.log.error({ err: err.message, path: this.path }, 'recording stopped (the call continues)');
    this.onFailure?.(err);
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
  }

  /** True once an I/O error has stopped this recording. */
  get stopped(): boolean {
    return this.failed;
  }

  /** Patch the RIFF sizes and close the file (after every queued frame is written). */
  async close(): Promise<void> {
    if (this.closed) return this.chain;
    this.closed = true;
    this.untap();
    this.enqueue(async () => {
      await this.fh?.write(this.header(this.bytes), 0, 44, 0);
      const fh = this.fh;
      this.fh = undefined;
      await fh?.close();
    });
    return this.chain;
  }
}
