import type { AiSession, AiSessionEvents, CallControl } from '../ai/session.js';
import { type AudioFormat, l16 } from './audio/format.js';
import { spokenPrompt } from './audio/speech.js';
import type { Logger } from './logger.js';
import { TypedEmitter } from './typed-emitter.js';

/**
 * Stands in for an AI that could not be reached (route `onAiUnavailable: apologise`): the front
 * answers as usual, this "session" speaks the apology as its first turn (local TTS, a chime if
 * espeak-ng fails) and hangs up once it has played. Being an AiSession, it needs no special case
 * in any front: SIP, WhatsApp and outbound calls all get it through the connector.
 */
export class ApologySession extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly inputFormat: AudioFormat;
  readonly outputFormat: AudioFormat;
  private audio: Buffer | undefined;
  private spoken = false;
  private closed = false;

  constructor(
    legFormat: AudioFormat,
    private readonly text: string,
    private readonly control: CallControl,
    private readonly log: Logger,
  ) {
    super();
    // G.711 legs: 8 kHz PCM keeps the conversion to a table lookup; anything else 24 kHz.
    const rate = legFormat.codec === 'pcmu' || legFormat.codec === 'pcma' ? 8000 : 24000;
    this.inputFormat = l16(rate);
    this.outputFormat = l16(rate);
  }

  /** Synthesise the prompt before the call is answered, so the caller hears it at once. */
  async start(): Promise<void> {
    this.audio = await spokenPrompt(this.text, this.outputFormat);
    this.emit('ready');
  }

  startFirstTurn(): boolean {
    if (this.spoken || this.closed || !this.audio) return false;
    this.spoken = true;
    this.log.info({ text: this.text }, 'AI unavailable: playing the apology, then hanging up');
    this.emit('response_started', 'apology');
    this.emit('audio', this.audio, 'apology');
    this.emit('transcript', { role: 'ai', text: this.text, at: Date.now(), itemId: 'apology' });
    this.emit('response_done', 'apology');
    this.control.hangupAfterPlayout('ai_unavailable');
    return true;
  }

  sendAudio(): void {
    // Nobody is listening: the caller's audio is dropped.
  }

  playoutCleared(): void {
    // The apology plays to the end even if the caller talks over it.
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.emit('closed', reason);
  }
}
