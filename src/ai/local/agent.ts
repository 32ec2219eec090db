import type { LocalRouteConfig } from '../../config/schema.js';
import { type AudioFormat, l16 } from '../../core/audio/format.js';
import { pcmBuffer, pcmView } from '../../core/audio/level.js';
import { EnergyVad } from '../../core/audio/vad.js';
import type { Logger } from '../../core/logger.js';
import type { PlayedMark } from '../../core/playout.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { AiBackend, AiSession, AiSessionEvents, AiSessionOptions } from '../session.js';
import { chime, speak } from './tts.js';

/** Longest utterance echoed back (the rest is dropped), so a stuck VAD can't grow memory. */
const MAX_UTTERANCE_MS = 10_000;
/** Audio kept from before speech was detected, so the echo doesn't clip the first syllable. */
const PRE_ROLL_FRAMES = 5;

/**
 * The embedded default AI: greets the caller with espeak-ng speech, then echoes each utterance
 * back once the caller stops talking. Needs no keys or network, and exercises the whole path
 * (jitter buffer, converters, pacing, barge-in) exactly as a real backend does.
 */
export class LocalAgentSession extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly inputFormat: AudioFormat;
  readonly outputFormat: AudioFormat;
  private readonly vad = new EnergyVad({ thresholdDbfs: -40, silenceMs: 600 });
  private readonly log: Logger;
  private utterance: Buffer[] = [];
  private preRoll: Buffer[] = [];
  private turn = 0;
  private closed = false;
  /** The greeting, synthesised while the call rings; played by startFirstTurn(). */
  private greeting: { text: string; pcm: Int16Array } | undefined;
  private greeted = false;
  private lastLoudAt = 0;

  constructor(
    private readonly route: LocalRouteConfig,
    opts: AiSessionOptions,
  ) {
    super();
    // G.711 legs: work at 8 kHz so the only conversion is the G.711 table lookup.
    const rate = opts.legFormat.codec === 'pcmu' || opts.legFormat.codec === 'pcma' ? 8000 : 24000;
    this.inputFormat = l16(rate);
    this.outputFormat = l16(rate);
    this.log = opts.log.child({ ai: 'local' });
  }

  /** Ready once the greeting (route `firstTurn`: `ai` → `greeting`, `text` → its text) is synthesised. */
  async start(): Promise<void> {
    const ft = this.route.firstTurn;
    const text = ft.mode === 'text' ? ft.text : ft.mode === 'ai' ? this.route.greeting : undefined;
    if (text) this.greeting = { text, pcm: await this.synthesise(text) };
    this.emit('ready');
  }

  startFirstTurn(): boolean {
    if (this.greeted || !this.greeting || this.closed) return false;
    this.greeted = true;
    this.respond('greeting', pcmBuffer(this.greeting.pcm), this.greeting.text);
    return true;
  }

  private async synthesise(text: string): Promise<Int16Array> {
    try {
      return await speak(text, this.outputFormat.sampleRate);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'espeak-ng failed; playing a chime instead');
      return chime(this.outputFormat.sampleRate);
    }
  }

  private async speakText(text: string, itemId: string): Promise<void> {
    const pcm = await this.synthesise(text);
    if (this.closed) return;
    this.respond(itemId, pcmBuffer(pcm), text);
  }

  private respond(itemId: string, audio: Buffer, text: string): void {
    this.emit('response_started', itemId);
    this.emit('audio', audio, itemId);
    this.emit('transcript', { role: 'ai', text, at: Date.now(), itemId });
    this.emit('response_done', itemId);
  }

  sendAudio(frame: Buffer): void {
    if (this.closed) return;
    const ev = this.vad.process(pcmView(frame));
    if (this.vad.loud) this.lastLoudAt = performance.now();
    if (ev === 'start') {
      this.utterance = [...this.preRoll];
      this.emit('speech_started');
    }
    if (this.vad.speaking || ev === 'stop') {
      if (this.utterance.length * 20 < MAX_UTTERANCE_MS) this.utterance.push(Buffer.from(frame));
    } else {
      this.preRoll.push(Buffer.from(frame));
      if (this.preRoll.length > PRE_ROLL_FRAMES) this.preRoll.shift();
    }
    if (ev === 'stop') {
      this.emit('speech_stopped', this.lastLoudAt);
      const audio = Buffer.concat(this.utterance);
      this.utterance = [];
      const turn = ++this.turn;
      const seconds = (audio.length / 2 / this.inputFormat.sampleRate).toFixed(1);
      this.emit('transcript', { role: 'caller', text: `[utterance ${turn}, ${seconds} s]`, at: Date.now() });
      this.respond(`echo-${turn}`, audio, `[echo of utterance ${turn}]`);
    }
  }

  playoutCleared(mark: PlayedMark): void {
    this.log.debug({ item: mark.itemId, playedMs: mark.playedMs }, 'caller interrupted');
  }

  say(text: string): void {
    void this.speakText(text, `say-${++this.turn}`);
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.emit('closed', reason);
  }
}

export class LocalAgentBackend implements AiBackend {
  readonly kind = 'local';
  constructor(private readonly route: LocalRouteConfig) {}
  open(opts: AiSessionOptions): AiSession {
    return new LocalAgentSession(this.route, opts);
  }
}
