import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Resampler } from './audio/resampler.js';
import type { Bridge } from './bridge.js';

/**
 * Stereo WAV of a call: caller on the left, AI on the right, at the AI's output rate. Written
 * frame by frame (a crash keeps what was recorded); the RIFF sizes are patched on close.
 */
export class CallRecorder {
  private readonly fd: number;
  private bytes = 0;
  private readonly rate: number;
  private readonly perFrame: number;
  private readonly callerResampler: Resampler | undefined;
  readonly path: string;

  constructor(dir: string, callId: string, bridge: Bridge) {
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, `${callId}.wav`);
    this.fd = openSync(this.path, 'w');
    this.rate = bridge.ai.outputFormat.sampleRate;
    this.perFrame = this.rate / 50;
    const inRate = bridge.ai.inputFormat.sampleRate;
    this.callerResampler = inRate !== this.rate ? new Resampler(inRate, this.rate) : undefined;
    writeSync(this.fd, this.header(0));
    bridge.tap = (caller, ai) => this.write(caller, ai);
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

  private write(caller: Int16Array | null, ai: Int16Array | null): void {
    const left = caller && this.callerResampler ? this.callerResampler.process(caller) : caller;
    const frame = Buffer.alloc(this.perFrame * 4);
    for (let i = 0; i < this.perFrame; i++) {
      frame.writeInt16LE(left?.[i] ?? 0, i * 4);
      frame.writeInt16LE(ai?.[i] ?? 0, i * 4 + 2);
    }
    writeSync(this.fd, frame);
    this.bytes += frame.length;
  }

  close(): void {
    writeSync(this.fd, this.header(this.bytes), 0, 44, 0);
    closeSync(this.fd);
  }
}
