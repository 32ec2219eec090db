/** Send times kept: one per 20 ms append, so 10 s of caller audio. */
const MAX_TIMES = 500;

/**
 * When each caller frame went out on the current socket, so a server VAD's `audio_end_ms` (which
 * counts the audio appended on that socket) can be placed on our clock: the caller's end of
 * speech as it passed through the gateway, for the turn-latency measurement.
 */
export class AppendClock {
  private times: number[] = [];
  /** Frame number of times[0] since the socket opened. */
  private base = 0;

  reset(): void {
    this.times = [];
    this.base = 0;
  }

  /** One 20 ms frame was appended now. */
  mark(): void {
    this.times.push(performance.now());
    if (this.times.length > MAX_TIMES) {
      this.times.shift();
      this.base++;
    }
  }

  /**
   * When the frame holding `audioEndMs − hangoverMs` went out (the server's end of speech includes
   * its silence hangover); undefined when that is outside the window kept.
   */
  endOfSpeech(audioEndMs: unknown, hangoverMs: number): number | undefined {
    if (typeof audioEndMs !== 'number' || !Number.isFinite(audioEndMs)) return undefined;
    const frame = Math.ceil(Math.max(0, audioEndMs - hangoverMs) / 20) - 1 - this.base;
    return frame >= 0 ? this.times[Math.min(frame, this.times.length - 1)] : undefined;
  }
}
