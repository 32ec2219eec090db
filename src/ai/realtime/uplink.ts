import type WebSocket from 'ws';
import type { Logger } from '../../core/logger.js';
import type { AppendClock } from './append-clock.js';
import type { RealtimeClientEvent } from './protocol.js';
import type { RealtimeStats } from './session.js';

/** Stop queueing caller audio when the socket stalls (the bytes would be stale anyway). */
const MAX_BUFFERED_BYTES = 1 << 20;

/**
 * Caller audio up to OpenAI: one `input_audio_buffer.append` per 20 ms frame, timed by the
 * AppendClock (for end-of-speech), and dropped rather than queued while the socket is stalled.
 */
export class CallerAudioUplink {
  private stalledWarned = false;

  constructor(
    private readonly stats: Pick<RealtimeStats, 'appends' | 'droppedFrames'>,
    private readonly clock: AppendClock,
    private readonly log: Logger,
    private readonly send: (ev: RealtimeClientEvent, cb?: (err?: Error) => void) => boolean,
    /** Benchmark tap: the append carrying `frame` has been written to the socket. */
    private readonly written?: (frame: Buffer) => void,
  ) {}

  append(ws: WebSocket, frame: Buffer): void {
    if (ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.stats.droppedFrames++;
      if (!this.stalledWarned)
        this.log.warn({ buffered: ws.bufferedAmount }, 'Realtime socket stalled; dropping caller audio');
      this.stalledWarned = true;
      return;
    }
    this.stalledWarned = false;
    this.stats.appends++;
    this.clock.mark();
    const written = this.written;
    this.send(
      { type: 'input_audio_buffer.append', audio: frame.toString('base64') },
      written ? () => written(frame) : undefined,
    );
  }
}
