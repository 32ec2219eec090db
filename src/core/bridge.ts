import type { AiSession } from '../ai/session.js';
import { type AudioFormat, durationMs, frameBytes } from './audio/format.js';
import { createCodec, type FrameCodec } from './audio/codecs.js';
import { dbfs } from './audio/level.js';
import { createConverter, type FrameConverter } from './audio/converter.js';
import type { Call } from './call.js';
import { GatewayError } from './errors.js';
import type { FrameClock } from './frame-clock.js';
import type { MediaLeg } from './media-leg.js';
import type { MediaTap, TapSource } from './media-tap.js';
import { PlayoutBuffer } from './playout.js';
import { type LatencySample, TurnLatency } from './turn-latency.js';

export interface BridgeStats {
  framesToAi: number;
  framesToLeg: number;
  silenceToLeg: number;
  badFrames: number;
  bargeIns: number;
  /** Gateway's share of the last barge-in: speech_started seen → playout cleared (ms). */
  lastBargeInMs: number | undefined;
}

export interface BridgeHooks {
  /** Time from a caller frame leaving the leg to the AI session accepting it (ms). */
  onUplinkLatency?: (ms: number) => void;
  onBargeIn?: (ms: number) => void;
  onAiError?: (route: string) => void;
  /** A response ended failed/incomplete; `reason` is a short code (rate_limit_exceeded, content_filter...). */
  onResponseFailed?: (route: string, reason: string) => void;
  /** Answer → first AI audio, or caller turn → AI reply (see turn-latency.ts). */
  onLatency?: (sample: LatencySample) => void;
}

/** AI audio quieter than this is not "the AI speaking" (OpenAI SIP sends silence between turns). */
const AUDIBLE_DBFS = -45;

/**
 * One tick of both directions as PCM: the caller's frame at the AI's input rate (null when none
 * went to the AI), the AI's frame at its output rate (null when it was silent). See tapRates.
 */
export type BridgeTap = MediaTap;

const LEVEL_EVERY = 10; // 5 meter updates a second

function silenceByte(format: AudioFormat): number {
  if (format.codec === 'pcmu') return 0xff;
  if (format.codec === 'pcma') return 0xd5;
  return 0;
}

/**
 * Connects one leg to one AI session on the shared media clock. Each tick moves one frame each
 * way: leg → (convert) → AI, and playout → (convert) → leg, writing silence when the AI is quiet so
 * the far end always gets a packet every 20 ms (WhatsApp drops calls with media gaps).
 */
export class Bridge implements TapSource {
  readonly stats: BridgeStats = {
    framesToAi: 0,
    framesToLeg: 0,
    silenceToLeg: 0,
    badFrames: 0,
    bargeIns: 0,
    lastBargeInMs: undefined,
  };
  readonly playout: PlayoutBuffer;
  muted = false;
  /** Live levels (dBFS) for meters, sampled every LEVEL_EVERY ticks from the AI-side frames. */
  readonly levels = { callerDb: -120, aiDb: -120 };
  private readonly aiInCodec: FrameCodec;
  private readonly aiOutCodec: FrameCodec;
  private ticks = 0;
  /** Per-tick taps of both directions as PCM at the AI's rates (call recording, operator listen-in). */
  private readonly taps = new Set<BridgeTap>();
  private readonly toAi: FrameConverter;
  private readonly toLeg: FrameConverter;
  private readonly legSilence: Buffer;
  private readonly padByte: number;
  private unsubscribe: (() => void) | undefined;
  private hangupWhenDrained: string | undefined;
  private readonly onDrained: (() => void)[] = [];
  private responseActive = false;
  /** Caller audio goes to the AI while this is true; a front may hold it shut until it answers. */
  uplinkOpen = true;
  private readonly latency: TurnLatency;

  constructor(
    private readonly call: Call,
    readonly leg: MediaLeg,
    readonly ai: AiSession,
    private readonly clock: FrameClock,
    private readonly hooks: BridgeHooks = {},
  ) {
    const outBytes = frameBytes(ai.outputFormat);
    if (outBytes === undefined) {
      throw new GatewayError('unsupported_conversion', 'AI output must be a fixed-size format', call.id);
    }
    this.toAi = createConverter(leg.format, ai.inputFormat, call.id);
    this.toLeg = createConverter(ai.outputFormat, leg.format, call.id);
    this.playout = new PlayoutBuffer(outBytes, outBytes / durationMs(ai.outputFormat, outBytes));
    this.padByte = silenceByte(ai.outputFormat);
    // AI formats are always G.711 or L16 (stateless codecs), so sampling a frame for a meter is cheap.
    this.aiInCodec = createCodec(ai.inputFormat, undefined, call.id);
    this.aiOutCodec = createCodec(ai.outputFormat, undefined, call.id);
    this.legSilence = createCodec(leg.format, leg.format.codec === 'opus' ? 24000 : undefined, call.id).silence();
    call.log.info(
      {
        leg: `${leg.format.codec}/${leg.format.sampleRate}`,
        aiIn: `${ai.inputFormat.codec}/${ai.inputFormat.sampleRate}`,
        aiOut: `${ai.outputFormat.codec}/${ai.outputFormat.sampleRate}`,
        passthrough: this.toAi.passthrough && this.toLeg.passthrough,
      },
      'bridge formats',
    );
    this.latency = new TurnLatency((sample) => {
      call.latency.add(sample);
      call.log.debug(sample, sample.kind === 'answer' ? 'answer → first AI audio' : 'caller turn → AI audio');
      hooks.onLatency?.(sample);
    });
    ai.on('audio', (chunk, itemId) => {
      if (this.latency.waitingForAudio && this.audible(chunk)) this.latency.aiAudio(performance.now());
      this.playout.push(chunk, itemId);
    });
    ai.on('speech_started', () => {
      this.latency.callerSpeaking();
      this.bargeIn();
    });
    ai.on('speech_stopped', (endedAt, handedAt) => {
      const now = performance.now();
      this.latency.callerTurnEnded(endedAt ?? now, handedAt ?? endedAt ?? now);
    });
    ai.on('response_failed', (reason) => hooks.onResponseFailed?.(call.route ?? '', reason));
    // While a response streams, playout waits for whole frames (adaptive prebuffer, see playout.ts).
    ai.on('response_started', () => {
      this.responseActive = true;
      this.playout.streaming = true;
    });
    ai.on('response_done', () => {
      this.responseActive = false;
      this.playout.streaming = false;
    });
    ai.on('transcript', (entry) => call.addTranscript(entry));
    ai.on('tool_call', (record) => call.addToolCall(record));
    ai.on('error', (err) => {
      call.log.warn({ err: err.message }, 'AI session error');
      hooks.onAiError?.(call.route ?? '');
    });
  }

  get tapRates(): { caller: number; other: number } {
    return { caller: this.ai.inputFormat.sampleRate, other: this.ai.outputFormat.sampleRate };
  }

  /** Hear both directions every tick (see BridgeTap); returns the function that stops it. */
  addTap(tap: BridgeTap): () => void {
    this.taps.add(tap);
    return () => void this.taps.delete(tap);
  }

  get passthrough(): boolean {
    return this.toAi.passthrough && this.toLeg.passthrough;
  }

  start(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.clock.subscribe(() => this.tick());
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.playout.clear();
  }

  /**
   * The caller is connected (the front answered): open the uplink, let the AI take its first turn
   * and start the answer → first-audio clock.
   */
  answered(): void {
    const at = performance.now();
    this.uplinkOpen = true;
    const asked = this.ai.startFirstTurn?.() ?? false;
    if (asked) this.latency.answered(at, performance.now());
  }

  /** Whether a chunk of AI output is louder than silence (only checked while a latency clock runs). */
  private audible(chunk: Buffer): boolean {
    const frame = this.playout.frameSize;
    for (let o = 0; o + frame <= chunk.length; o += frame) {
      if (dbfs(this.aiOutCodec.decode(chunk.subarray(o, o + frame))) > AUDIBLE_DBFS) return true;
    }
    return false;
  }

  /** Hang up once everything the AI has said so far has been played to the caller. */
  hangupAfterPlayout(reason: string): void {
    this.hangupWhenDrained = reason;
  }

  /** Run `fn` once everything queued so far has been played to the leg (e.g. a briefing before a transfer). */
  whenDrained(fn: () => void): void {
    this.onDrained.push(fn);
  }

  /** Operator/AI barge-in: drop queued AI audio at once and tell the AI what was heard. */
  bargeIn(): void {
    const t0 = performance.now();
    const mark = this.playout.clear();
    const ms = performance.now() - t0;
    this.stats.bargeIns++;
    this.stats.lastBargeInMs = ms;
    this.hooks.onBargeIn?.(ms);
    this.call.log.debug({ item: mark.itemId, playedMs: mark.playedMs, gatewayMs: ms }, 'barge-in');
    this.ai.playoutCleared(mark);
  }

  /** One 20 ms step in each direction. Never throws: a bad frame is counted and skipped. */
  tick(): void {
    const sampleLevel = ++this.ticks % LEVEL_EVERY === 0;
    let tapIn: Int16Array | null = null;
    let tapOut: Int16Array | null = null;
    try {
      const inbound = this.leg.readFrame();
      if (inbound && !this.muted && this.uplinkOpen) {
        const t0 = performance.now();
        const frame = this.toAi.convert(inbound);
        this.ai.sendAudio(frame);
        this.hooks.onUplinkLatency?.(performance.now() - t0);
        this.stats.framesToAi++;
        if (sampleLevel || this.taps.size > 0) {
          const pcm = this.aiInCodec.decode(frame);
          if (sampleLevel) this.levels.callerDb = Math.round(dbfs(pcm));
          tapIn = pcm;
        }
      } else if (sampleLevel) {
        this.levels.callerDb = -120;
      }
    } catch (err) {
      this.countBad(err);
    }
    try {
      const out = this.playout.pull(this.padByte);
      if (out) {
        this.leg.writeFrame(this.toLeg.convert(out));
        this.stats.framesToLeg++;
        const timing = this.latency.waiting;
        if (sampleLevel || this.taps.size > 0 || timing) {
          const pcm = this.aiOutCodec.decode(out);
          const db = dbfs(pcm);
          if (sampleLevel) this.levels.aiDb = Math.round(db);
          if (timing && db > AUDIBLE_DBFS) this.latency.played(performance.now());
          if (this.taps.size > 0) tapOut = pcm;
        }
      } else {
        if (sampleLevel) this.levels.aiDb = -120;
        this.leg.writeFrame(this.legSilence);
        this.stats.silenceToLeg++;
        if (this.onDrained.length > 0 && !this.responseActive) {
          for (const fn of this.onDrained.splice(0)) fn();
        }
        if (this.hangupWhenDrained !== undefined && !this.responseActive) {
          const cause = this.hangupWhenDrained;
          this.hangupWhenDrained = undefined;
          void this.call.end({ by: 'ai', cause });
        }
      }
    } catch (err) {
      this.countBad(err);
    }
    for (const tap of this.taps) {
      try {
        tap(tapIn, tapOut);
      } catch (err) {
        this.countBad(err); // a listener's failure must not stop the call's media
      }
    }
  }

  private countBad(err: unknown): void {
    this.stats.badFrames++;
    // Log the first and then every 50th so a broken stream can't flood the logs.
    if (this.stats.badFrames === 1 || this.stats.badFrames % 50 === 0) {
      this.call.log.warn({ err: (err as Error).message, count: this.stats.badFrames }, 'bad media frame skipped');
    }
  }
}
