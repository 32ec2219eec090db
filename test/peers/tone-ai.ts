import type { AiSession, AiSessionEvents, CallControl } from '../../src/ai/session.js';
import { createConverter, type FrameConverter } from '../../src/core/audio/converter.js';
import { l16, type AudioFormat } from '../../src/core/audio/format.js';
import { concatPcm, pcmBuffer, pcmView } from '../../src/core/audio/level.js';
import type { PlayedMark } from '../../src/core/playout.js';
import { TypedEmitter } from '../../src/core/typed-emitter.js';

/** How far ahead of real time the tone AI keeps the bridge's playout buffer. */
const LEAD_MS = 200;

export interface ToneAiOptions {
  /** What it asks the bridge for (pcmu = passthrough from a G.711 leg). Default L16 24 kHz. */
  format?: AudioFormat;
  control?: CallControl;
  /** Delay before it is ready (tests of slow AI start). */
  startDelayMs?: number;
  /** Go quiet for half of every period (the bridge must then send encoded silence). */
  gapEveryMs?: number;
}

/**
 * The AI side for front tests: plays a continuous, phase-continuous tone a little ahead of real
 * time, and records every caller frame it is given as PCM, so a test checks both directions.
 */
export class ToneAi extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly inputFormat: AudioFormat;
  readonly heard: Int16Array[] = [];
  readonly control: CallControl;
  closedWith: string | undefined;
  private readonly toPcm: FrameConverter;
  private readonly fromPcm: FrameConverter;
  private timer: NodeJS.Timeout | undefined;
  private emitted = 0;
  private t0 = 0;

  constructor(
    readonly freq: number,
    private readonly opts: ToneAiOptions = {},
  ) {
    super();
    this.inputFormat = opts.format ?? l16(24000);
    this.control = opts.control ?? {
      hangupAfterPlayout: () => undefined,
      transfer: async () => ({ ok: false, detail: 'no call control in this test' }),
    };
    this.toPcm = createConverter(this.inputFormat, l16(this.inputFormat.sampleRate));
    this.fromPcm = createConverter(l16(this.inputFormat.sampleRate), this.inputFormat);
  }

  get outputFormat(): AudioFormat {
    return this.inputFormat;
  }

  async start(): Promise<void> {
    if (this.opts.startDelayMs) await new Promise((r) => setTimeout(r, this.opts.startDelayMs));
    if (this.closedWith) return;
    this.t0 = performance.now();
    this.emit('ready');
    this.pump();
    this.timer = setInterval(() => this.pump(), 50);
  }

  private pump(): void {
    const rate = this.inputFormat.sampleRate;
    const per = rate / 50;
    const due = Math.floor(((performance.now() - this.t0 + LEAD_MS) * rate) / 1000 / per) * per;
    const n = due - this.emitted;
    if (n <= 0 || this.freq <= 0) return;
    const gap = this.opts.gapEveryMs ?? 0;
    const quiet = gap > 0 && ((this.emitted / rate) * 1000) % gap >= gap / 2;
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++)
      pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * this.freq * (this.emitted + i)) / rate));
    this.emitted += n;
    if (quiet) return; // like a real AI between turns: nothing at all
    const buf = pcmBuffer(pcm);
    const parts: Buffer[] = [];
    for (let o = 0; o + per * 2 <= buf.length; o += per * 2)
      parts.push(this.fromPcm.convert(buf.subarray(o, o + per * 2)));
    this.emit('audio', Buffer.concat(parts), 'tone');
  }

  /** Stop the tone (so a hangup-after-playout can drain). */
  quiet(): void {
    clearInterval(this.timer);
  }

  sendAudio(frame: Buffer): void {
    this.heard.push(Int16Array.from(pcmView(this.toPcm.convert(frame))));
  }

  playoutCleared(_mark: PlayedMark): void {}

  close(reason: string): Promise<void> {
    clearInterval(this.timer);
    this.closedWith ??= reason;
    this.emit('closed', reason);
    return Promise.resolve();
  }

  heardPcm(skipFrames = 0): Int16Array {
    return concatPcm(this.heard.slice(skipFrames));
  }
}
