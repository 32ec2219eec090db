import { dbfsOf } from '../support/audio.js';
import type { ToneAi } from './tone-ai.js';

/**
 * The tone AI says goodbye (quiet, then hang up after playout) once it has heard `loudFrames`
 * loud frames of the caller. Tests that check audio both ways before the AI's BYE synchronise on
 * the audio this way: a fixed timer from session start can fire before any media flowed on a
 * loaded box. The poll stops when the session closes (the call may end first).
 */
export function hangUpWhenHeard(s: ToneAi, loudFrames: number): void {
  let counted = 0;
  let loud = 0;
  const poll = setInterval(() => {
    for (; counted < s.heard.length; counted++) if (dbfsOf(s.heard[counted]!) > -30) loud++;
    if (loud < loudFrames) return;
    clearInterval(poll);
    s.quiet();
    s.control.hangupAfterPlayout('goodbye');
  }, 20);
  s.once('closed', () => clearInterval(poll));
}
