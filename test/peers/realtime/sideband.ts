import type { Conn, ServerContext } from './types.js';

/**
 * A SIP call's sideband carries no audio: OpenAI plays the answer on the SIP leg and reports its own
 * real-time playout as output_audio_buffer.started / stopped / cleared.
 */

/** Sideband: the caller interrupted OpenAI's playout on the SIP leg. */
export function playbackCleared(ctx: ServerContext, c: Conn): void {
  const p = c.playback;
  if (!p) return;
  if (p.stopTimer) clearTimeout(p.stopTimer);
  c.playback = undefined;
  ctx.send(c, { type: 'output_audio_buffer.cleared', event_id: '', response_id: p.responseId });
}

/** Sideband: OpenAI starts playing an answer on the SIP leg, in real time. */
export function playbackStarts(ctx: ServerContext, c: Conn, responseId: string): void {
  if (c.playback?.responseId === responseId) return;
  playbackCleared(ctx, c);
  c.playback = { responseId, stopTimer: undefined, startedAt: performance.now() };
  ctx.send(c, { type: 'output_audio_buffer.started', event_id: '', response_id: responseId });
}

/** Sideband: the response is done; playout of its `audioMs` ends in real time after it started. */
export function playbackEnds(ctx: ServerContext, c: Conn, responseId: string, audioMs: number): void {
  const p = c.playback;
  if (p?.responseId !== responseId) return;
  const left = Math.max(0, p.startedAt + audioMs - performance.now());
  p.stopTimer = ctx.later(c, left, () => {
    if (c.playback !== p) return;
    c.playback = undefined;
    ctx.send(c, { type: 'output_audio_buffer.stopped', event_id: '', response_id: responseId });
  });
}
