/**
 * How long the caller waits for the AI, measured at the gateway's leg boundary (what the leg hands
 * us / what we write to it; the far network and the leg's jitter buffer are outside it):
 * - `answer`: the call is answered → the first AI audio written to the caller's leg;
 * - `turn`: the end of the caller's speech reaches the AI → the first AI audio written to the leg.
 * `aiMs` is the AI's share (request or end of speech handed to the AI → its first audible audio
 * received); `gatewayMs` is ours (the rest: sending the request, playout wait, conversion).
 */
export interface LatencySample {
  kind: 'answer' | 'turn';
  totalMs: number;
  gatewayMs: number;
  aiMs: number;
  /** Epoch ms when the first AI audio reached the leg. */
  at: number;
}

interface Pending {
  kind: LatencySample['kind'];
  startAt: number;
  handedAt: number;
  audioAt: number | undefined;
}

/** A turn still unanswered after this long is not a turn the AI is answering: drop it. */
const MAX_WAIT_MS = 30_000;

/** Per-bridge measurement: fed by the bridge with times on the performance.now() clock. */
export class TurnLatency {
  private pending: Pending | undefined;

  constructor(private readonly report: (sample: LatencySample) => void) {}

  /** Waiting for AI audio (the bridge only checks audio loudness while this is true). */
  get waiting(): boolean {
    return this.pending !== undefined;
  }

  /** Waiting for the first audible AI chunk to arrive (not yet for it to be played). */
  get waitingForAudio(): boolean {
    return this.pending !== undefined && this.pending.audioAt === undefined;
  }

  /** The caller was connected at `at`; the first turn was asked of the AI at `handedAt`. */
  answered(at: number, handedAt: number = at): void {
    this.pending = { kind: 'answer', startAt: at, handedAt, audioAt: undefined };
  }

  /** The caller's speech ended at `endedAt`; the AI was asked to answer at `handedAt`. */
  callerTurnEnded(endedAt: number, handedAt: number = endedAt): void {
    // An unanswered greeting is superseded: the caller spoke instead of waiting for it.
    this.pending = { kind: 'turn', startAt: endedAt, handedAt: Math.max(endedAt, handedAt), audioAt: undefined };
  }

  /** The caller started speaking again: whatever AI audio comes next answers a later turn. */
  callerSpeaking(): void {
    if (this.pending?.kind === 'turn') this.pending = undefined;
  }

  /** An audible chunk of AI audio arrived from the AI at `now`. */
  aiAudio(now: number): void {
    const p = this.pending;
    if (!p || p.audioAt !== undefined) return;
    if (now - p.startAt > MAX_WAIT_MS) {
      this.pending = undefined;
      return;
    }
    p.audioAt = now;
  }

  /** An audible AI frame was written to the caller's leg at `now`. */
  played(now: number): void {
    const p = this.pending;
    if (!p || p.audioAt === undefined) return;
    this.pending = undefined;
    const totalMs = Math.max(0, now - p.startAt);
    const aiMs = Math.min(totalMs, Math.max(0, p.audioAt - p.handedAt));
    this.report({
      kind: p.kind,
      totalMs: round(totalMs),
      aiMs: round(aiMs),
      gatewayMs: round(totalMs - aiMs),
      at: Date.now(),
    });
  }
}

const round = (ms: number) => Math.round(ms * 10) / 10;

const MAX_TURNS_KEPT = 50;

/** What a call keeps of its latency samples: the answer one and the last turns, bounded. */
export class CallLatency {
  answer: LatencySample | undefined;
  readonly turns: LatencySample[] = [];
  turnCount = 0;

  add(sample: LatencySample): void {
    if (sample.kind === 'answer') {
      this.answer = sample;
      return;
    }
    this.turnCount++;
    this.turns.push(sample);
    if (this.turns.length > MAX_TURNS_KEPT) this.turns.shift();
  }

  /** The call record's `latency` object. */
  view() {
    const totals = this.turns.map((t) => t.totalMs).sort((a, b) => a - b);
    const pick = (q: number) =>
      totals.length ? totals[Math.min(totals.length - 1, Math.floor(q * totals.length))]! : null;
    return {
      answerToFirstAudio: this.answer ?? null,
      turns: {
        count: this.turnCount,
        p50TotalMs: pick(0.5),
        p95TotalMs: pick(0.95),
        /** The last (up to 50) turns, oldest first. */
        samples: this.turns,
      },
    };
  }
}
