import { randomUUID } from 'node:crypto';
import type { AiSession, ToolCallRecord, TranscriptEntry, TransferResult } from '../ai/session.js';
import type { Bridge } from './bridge.js';
import { GatewayError } from './errors.js';
import type { HandoffRequest, TransferRecord } from './handoff.js';
import type { Logger } from './logger.js';
import type { TapSource } from './media-tap.js';
import type { HangupReason, LegQuality, MediaLeg } from './media-leg.js';
import { CallLatency } from './turn-latency.js';
import { TypedEmitter } from './typed-emitter.js';

export type CallState = 'ringing' | 'answered' | 'bridged' | 'ended';
export type Front = 'sip' | 'whatsapp' | 'api' | 'browser' | 'test';

export interface CallInfo {
  front: Front;
  from: string;
  to: string;
  trunk?: string;
  direction?: 'inbound' | 'outbound';
  /** The front's own id (SIP Call-ID, WhatsApp wacid). */
  externalId?: string;
}

export type CallEvents = {
  state: [state: CallState];
  transcript: [entry: TranscriptEntry];
  tool_call: [record: ToolCallRecord];
  dtmf: [digit: string];
  /** The call's audio now flows through another bridge (transfer, hold, back to the AI). */
  tap_source: [source: TapSource];
  ended: [reason: HangupReason];
};

/**
 * One signalling message of the call as a front saw it (a SIP message for the console's ladder,
 * a WhatsApp webhook or Graph request), in the order sent or received.
 */
export interface SignallingMessage {
  at: number;
  direction: 'in' | 'out';
  protocol: 'sip' | 'whatsapp';
  /** The far end, e.g. `udp:192.0.2.1:5060`. */
  peer: string;
  /** `INVITE`, `200 OK (INVITE)`, ... */
  summary: string;
  raw: string;
}

/** How much of a call's history is kept in memory (and in its record). */
export interface CallBounds {
  maxTranscriptEntries: number;
  maxToolCalls: number;
  maxSignallingMessages?: number;
}
const DEFAULT_BOUNDS: CallBounds = { maxTranscriptEntries: 500, maxToolCalls: 100, maxSignallingMessages: 200 };

const NEXT: Record<CallState, CallState[]> = {
  ringing: ['answered', 'ended'],
  answered: ['bridged', 'ended'],
  bridged: ['ended'],
  ended: [],
};

type Cleanup = () => Promise<void> | void;

/** One sample of a call's quality: caller leg's jitter and cumulative loss/late packets, levels (dBFS). */
export interface QualitySample {
  at: number;
  jitterMs: number;
  lost: number;
  late: number;
  callerDb: number;
  aiDb: number;
}

/** One call through the gateway: its parties, route, state machine and what happened on it. */
export class Call extends TypedEmitter<CallEvents> {
  readonly id: string;
  readonly info: CallInfo;
  readonly log: Logger;
  state: CallState = 'ringing';
  route: string | undefined;
  readonly times: Partial<Record<CallState, number>> & { created: number };
  endReason: HangupReason | undefined;
  /** The latest `limits.maxTranscriptEntries` lines; `dropped` counts older ones let go. */
  readonly transcript: TranscriptEntry[] = [];
  readonly toolCalls: ToolCallRecord[] = [];
  readonly dropped = { transcript: 0, toolCalls: 0, signalling: 0 };
  /** Signalling messages (SIP ladder), the first `maxSignallingMessages` kept: the set-up matters most. */
  readonly signalling: SignallingMessage[] = [];
  readonly legs: MediaLeg[] = [];
  /** Last quality snapshot per leg, kept after the legs close for the call record. */
  readonly quality: Record<string, LegQuality> = {};
  /** Quality over time of the caller's leg (sampled by the ops layer; bounded there), for the call page. */
  readonly qualityOverTime: QualitySample[] = [];
  /** Answer → first AI audio and caller turn → AI reply, measured by the bridge. */
  readonly latency = new CallLatency();
  /** The bridge and AI session once connected (operator mute/say, live levels). */
  media: { bridge: Bridge; session: AiSession } | undefined;
  /** What carries the call's audio now (AI, hold or person): recording and listen-in follow it. */
  tapSource: TapSource | undefined;
  /** Set by fronts that can transfer (SIP REFER); absent means the front cannot. */
  transfer: ((destination: string) => Promise<void>) | undefined;
  /** Set by the core once the call is connected: REFER or bridged transfer, per route and request. */
  handoff: ((req: HandoffRequest) => Promise<TransferResult>) | undefined;
  /** Transfer attempts and their outcomes (call record). */
  readonly transfers: TransferRecord[] = [];
  /** Once a call has two parties (bridged transfer): whose leg is whose, so the record says who hung up. */
  readonly parties = new Map<string, 'caller' | 'target'>();
  private readonly cleanups: Cleanup[] = [];
  /** Signalling still finishing as the call ends (our BYE's transaction), awaited by settled(). */
  private readonly pendingSignalling = new Set<Promise<unknown>>();
  private ending: Promise<void> | undefined;

  constructor(
    info: CallInfo,
    log: Logger,
    id: string = randomUUID(),
    private readonly bounds: CallBounds = DEFAULT_BOUNDS,
  ) {
    super();
    this.id = id;
    this.info = info;
    this.times = { created: Date.now() };
    this.log = log.child({ callId: id, front: info.front, ...(info.trunk ? { trunk: info.trunk } : {}) });
  }

  transition(next: CallState): void {
    if (this.state === next) return;
    if (!NEXT[this.state].includes(next)) {
      throw new GatewayError('invalid_state', `cannot go from ${this.state} to ${next}`, this.id);
    }
    this.state = next;
    this.times[next] = Date.now();
    this.log.info({ state: next }, `call ${next}`);
    this.emit('state', next);
  }

  addLeg(leg: MediaLeg): void {
    this.legs.push(leg);
    leg.on('hangup', (reason) => {
      const party = this.parties.get(leg.id);
      void this.end(party ? { ...reason, party } : reason);
    });
    leg.on('dtmf', (digit) => this.emit('dtmf', digit));
    this.onEnd(async () => {
      this.quality[leg.id] = leg.quality();
      await leg.close(this.closeReasonFor(leg.id));
    });
  }

  /**
   * Why a leg is closed: the call's reason, except for the other party of a bridged transfer, whose
   * far end did not hang up itself and must be told (BYE, Graph terminate).
   */
  private closeReasonFor(legId: string): HangupReason {
    const reason = this.endReason ?? { by: 'gateway', cause: 'ended' };
    const party = this.parties.get(legId);
    if (!party || !reason.party || reason.party === party) return reason;
    return { by: 'gateway', cause: `${reason.party}_hung_up`, detail: reason.detail, party: reason.party };
  }

  /** The call's audio moved to another bridge: followers (recorder, listeners) re-tap it. */
  setTapSource(source: TapSource): void {
    if (this.tapSource === source) return;
    this.tapSource = source;
    this.emit('tap_source', source);
  }

  addTranscript(entry: TranscriptEntry): void {
    this.transcript.push(entry);
    if (this.transcript.length > this.bounds.maxTranscriptEntries) {
      this.transcript.shift();
      this.dropped.transcript++;
    }
    this.emit('transcript', entry);
  }

  addSignalling(msg: SignallingMessage): void {
    // Keep the first ones (set-up) and always the last one (how it ended) once the cap is reached.
    const max = this.bounds.maxSignallingMessages ?? 200;
    if (this.signalling.length >= max) {
      this.signalling[max - 1] = msg;
      this.dropped.signalling++;
    } else this.signalling.push(msg);
  }

  addToolCall(record: ToolCallRecord): void {
    this.toolCalls.push(record);
    if (this.toolCalls.length > this.bounds.maxToolCalls) {
      this.toolCalls.shift();
      this.dropped.toolCalls++;
    }
    this.emit('tool_call', record);
  }

  /** Register teardown work; run in reverse order when the call ends (last acquired, first released). */
  onEnd(fn: Cleanup): void {
    if (this.state === 'ended') void Promise.resolve().then(fn);
    else this.cleanups.push(fn);
  }

  /**
   * A front's end-of-call signalling that finishes in the background (our BYE until its final
   * response): teardown never waits for it, but the call record does (bounded, see settled()), so
   * the record's SIP ladder holds the 200 to our BYE.
   */
  settleAfterEnd(p: Promise<unknown>): void {
    const forget = (): void => void this.pendingSignalling.delete(done);
    const done: Promise<void> = p.then(forget, forget);
    this.pendingSignalling.add(done);
  }

  /** Whether some end-of-call signalling is still finishing (see settleAfterEnd). */
  get settling(): boolean {
    return this.pendingSignalling.size > 0;
  }

  /** Resolves once the end's signalling has finished (see settleAfterEnd), or after `maxMs`. */
  async settled(maxMs: number): Promise<void> {
    if (this.pendingSignalling.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.pendingSignalling]),
      new Promise((r) => (timer = setTimeout(r, maxMs))),
    ]);
    clearTimeout(timer);
  }

  get ended(): boolean {
    return this.state === 'ended';
  }

  /** End the call once, whoever asks first; every registered cleanup runs even if one fails. */
  end(reason: HangupReason): Promise<void> {
    if (this.ending) return this.ending;
    this.endReason = reason;
    this.state = 'ended';
    this.times.ended = Date.now();
    this.ending = (async () => {
      for (const fn of this.cleanups.reverse()) {
        try {
          await fn();
        } catch (err) {
          this.log.warn({ err }, 'cleanup step failed');
        }
      }
      this.cleanups.length = 0;
      const durationMs = this.times.ended! - (this.times.answered ?? this.times.ended!);
      this.log.info({ reason, durationMs }, 'call ended');
      this.emit('state', 'ended');
      this.emit('ended', reason);
    })();
    return this.ending;
  }
}
