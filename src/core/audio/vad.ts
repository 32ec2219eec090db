import { dbfs } from './level.js';

export interface VadOptions {
  /** Frames louder than this (dBFS) count as speech. */
  thresholdDbfs?: number;
  /** Speech must last this long before `start` fires (debounces clicks). */
  minSpeechMs?: number;
  /** This much quiet after speech fires `stop`. */
  silenceMs?: number;
  frameMs?: number;
}

export type VadEvent = 'start' | 'stop' | null;

/**
 * Energy voice-activity detector over 20 ms PCM frames. Deliberately simple: it serves the local
 * echo agent and the test peers, where the input is a clean tone or TTS; real turn detection is
 * the AI service's job (server/semantic VAD).
 */
export class EnergyVad {
  private readonly threshold: number;
  private readonly startFrames: number;
  private readonly stopFrames: number;
  private loudRun = 0;
  private quietRun = 0;
  speaking = false;
  /** Whether the last frame processed was above the threshold. */
  loud = false;

  constructor(opts: VadOptions = {}) {
    const frameMs = opts.frameMs ?? 20;
    this.threshold = opts.thresholdDbfs ?? -40;
    this.startFrames = Math.max(1, Math.round((opts.minSpeechMs ?? 60) / frameMs));
    this.stopFrames = Math.max(1, Math.round((opts.silenceMs ?? 500) / frameMs));
  }

  process(frame: Int16Array): VadEvent {
    const loud = dbfs(frame) > this.threshold;
    this.loud = loud;
    if (loud) {
      this.loudRun++;
      this.quietRun = 0;
    } else {
      this.quietRun++;
      this.loudRun = 0;
    }
    if (!this.speaking && this.loudRun >= this.startFrames) {
      this.speaking = true;
      return 'start';
    }
    if (this.speaking && this.quietRun >= this.stopFrames) {
      this.speaking = false;
      return 'stop';
    }
    return null;
  }
}
