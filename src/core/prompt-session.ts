import type { AiSession, AiSessionEvents } from '../ai/session.js';
import { type AudioFormat, l16 } from './audio/format.js';
import { pcmBuffer } from './audio/level.js';
import { resampleClip, spokenPrompt, type Pcm } from './audio/speech.js';
import type { Logger } from './logger.js';
import { TypedEmitter } from './typed-emitter.js';

/** Ring-back as most of Europe and Africa hear it (ETSI TR 101 041): 425 Hz, 1 s on, 4 s off. */
export const RINGBACK_HZ = 425;
const RING_ON_MS = 1000;
const RING_PERIOD_MS = 5000;
/** How far ahead of real time the ring-back is handed to the bridge's playout buffer. */
const LEAD_MS = 200;
const PUMP_MS = 50;

export interface PromptSessionOptions {
  /** Spoken first (local TTS; a chime when espeak-ng is missing). */
  text: string;
  /** After the text: the ring-back cadence until closed (hold while a person's phone rings), or nothing. */
  then: 'ringback' | 'silence';
  /** With `ringback`: this audio, looped, instead of the generated ring-back tone (a route's hold music). */
  holdAudio?: Pcm;
  log: Logger;
}

/**
 * A local "session" that speaks a prompt on a leg through an ordinary Bridge: the hold prompt and
 * ring-back the caller hears while a transfer target rings, or the briefing a person hears before
 * a warm transfer. Caller audio is dropped. Being an AiSession it needs no special case in the
 * bridge, exactly like the apology.
 */
export class PromptSession extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly inputFormat: AudioFormat;
  readonly outputFormat: AudioFormat;
  private audio: Buffer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private ringSamples = 0;
  private ringT0 = 0;
  /** The hold audio at the output rate, when the route has its own. */
  private loop: Int16Array | undefined;

  constructor(
    legFormat: AudioFormat,
    private readonly opts: PromptSessionOptions,
  ) {
    super();
    // G.711 legs: 8 kHz PCM keeps the conversion to a table lookup; anything else 24 kHz.
    const rate = legFormat.codec === 'pcmu' || legFormat.codec === 'pcma' ? 8000 : 24000;
    this.inputFormat = l16(rate);
    this.outputFormat = l16(rate);
  }

  /** Synthesise the prompt (bounded: espeak-ng gets 3 s, then the chime stands in). */
  async start(): Promise<void> {
    this.audio = await spokenPrompt(this.opts.text, this.outputFormat);
    if (this.opts.holdAudio) {
      const loop = resampleClip(this.opts.holdAudio, this.outputFormat.sampleRate);
      if (loop.length > 0) this.loop = loop;
    }
    this.emit('ready');
  }

  /** Milliseconds of prompt audio (once started). */
  get promptMs(): number {
    return this.audio ? (this.audio.length / 2 / this.outputFormat.sampleRate) * 1000 : 0;
  }

  startFirstTurn(): boolean {
    if (this.closed || !this.audio) return false;
    this.emit('response_started', 'prompt');
    this.emit('audio', this.audio, 'prompt');
    this.emit('transcript', { role: 'ai', text: this.opts.text, at: Date.now(), itemId: 'prompt' });
    this.emit('response_done', 'prompt');
    if (this.opts.then === 'ringback') {
      // The ring-back starts where the prompt ends: the clock starts that far ahead.
      this.ringT0 = performance.now() + this.promptMs;
      this.pump();
      this.timer = setInterval(() => this.pump(), PUMP_MS);
    }
    return false;
  }

  private pump(): void {
    const rate = this.outputFormat.sampleRate;
    const per = rate / 50;
    const dueMs = performance.now() - this.ringT0 + LEAD_MS;
    const due = Math.floor((dueMs * rate) / 1000 / per) * per;
    const n = due - this.ringSamples;
    if (n <= 0) return;
    const pcm = new Int16Array(n);
    const loop = this.loop;
    if (loop) {
      for (let i = 0; i < n; i++) pcm[i] = loop[(this.ringSamples + i) % loop.length]!;
      this.ringSamples = due;
      this.emit('audio', pcmBuffer(pcm), 'hold');
      return;
    }
    const onSamples = (RING_ON_MS * rate) / 1000;
    const period = (RING_PERIOD_MS * rate) / 1000;
    for (let i = 0; i < n; i++) {
      const s = this.ringSamples + i;
      pcm[i] = s % period < onSamples ? Math.round(6000 * Math.sin((2 * Math.PI * RINGBACK_HZ * s) / rate)) : 0;
    }
    this.ringSamples = due;
    this.emit('audio', pcmBuffer(pcm), 'ringback');
  }

  sendAudio(): void {
    // On hold: nobody is listening to the caller.
  }

  playoutCleared(): void {
    // Prompts play to the end.
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.opts.log.debug({ reason }, 'prompt session closed');
    this.emit('closed', reason);
  }
}
