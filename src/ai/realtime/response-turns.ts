import type { RealtimeClientEvent } from './protocol.js';

/**
 * One response at a time (the API refuses `response.create` while one is active): the response the
 * model is generating now, and what waits for it to end (a response asked for by a tool output,
 * caller text or a manual turn; operator lines to say).
 */
export class ResponseTurns {
  /** The response the model is generating now (from response.created to response.done). */
  active: string | undefined;
  /** Ask for a response as soon as the current one is done. */
  private respondAfterDone = false;
  private readonly saysQueued: string[] = [];

  constructor(private readonly send: (ev: RealtimeClientEvent) => boolean) {}

  /** Ask for a response now, or right after the current one. */
  request(): void {
    if (this.active) this.respondAfterDone = true;
    else this.send({ type: 'response.create' });
  }

  /** Keep an operator line for after the current response; false when none is active (say it now). */
  queueSay(text: string): boolean {
    if (!this.active) return false;
    this.saysQueued.push(text);
    return true;
  }

  /** The socket dropped: the current response will never finish. Returns it (if any); a waiting response is forgotten. */
  dropped(): string | undefined {
    const id = this.active;
    this.active = undefined;
    this.respondAfterDone = false;
    return id;
  }

  /** After response.done: the waiting response goes out, else the next queued line is said. */
  next(say: (text: string) => void): void {
    if (this.respondAfterDone) {
      this.respondAfterDone = false;
      this.send({ type: 'response.create' });
    } else {
      const text = this.saysQueued.shift();
      if (text !== undefined) say(text);
    }
  }
}
