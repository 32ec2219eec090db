import type { OpenAiSipRouteConfig } from '../../config/schema.js';
import { createCodec, type FrameCodec } from '../../core/audio/codecs.js';
import { type AudioFormat, PCMA_8K, PCMU_8K } from '../../core/audio/format.js';
import { dbfs } from '../../core/audio/level.js';
import { GatewayError } from '../../core/errors.js';
import type { FrameClock } from '../../core/frame-clock.js';
import type { LegDialer } from '../../core/leg-dialer.js';
import type { Logger } from '../../core/logger.js';
import type { MediaLeg } from '../../core/media-leg.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import { AppendClock } from '../realtime/append-clock.js';
import { firstTurnEvent, type RealtimeClientEvent } from '../realtime/protocol.js';
import type { AiBackend, AiSession, AiSessionEvents, AiSessionOptions } from '../session.js';
import { type AcceptSession, OpenAiCallsApi } from './calls-api.js';
import { OpenAiSideband } from './sideband.js';
import type { RealtimeCallIncoming } from './webhook.js';

/** The header that carries our call id to OpenAI, so its webhook can be matched to the call. */
export const CALL_ID_HEADER = 'X-Gateway-Call-Id';

/** Our call id as the incoming-call webhook carries it back (the INVITE's header), if any. */
export function gatewayCallIdOf(event: RealtimeCallIncoming): string | undefined {
  const header = event.data.sip_headers.find((h) => h.name.toLowerCase() === CALL_ID_HEADER.toLowerCase());
  const id = header?.value.trim();
  // Our ids are UUIDs; anything longer is not ours and is not looked up (in Redis or elsewhere).
  return id && id.length <= 64 ? id : undefined;
}

/** end_call: OpenAI's audio must have been this quiet for this long before we hang up... */
const DRAIN_QUIET_DBFS = -45;
const DRAIN_QUIET_MS = 400;
/** ...but a goodbye never holds the line longer than this. */
const DRAIN_MAX_MS = 15_000;
/**
 * A caller end of speech placed (via audio_end_ms) further back than this before the
 * speech_stopped event reached us is not believed: the timelines disagree (e.g. OpenAI counted
 * time we sent no audio), and the event's arrival minus the VAD's trailing silence is used.
 */
const MAX_DETECTION_LAG_MS = 2000;

export interface OpenAiSipDeps {
  clock: FrameClock;
  log: Logger;
  /** The SIP front's dialer; absent when SIP is disabled. */
  dialer: () => LegDialer | undefined;
  dialTimeoutMs?: number;
}

/**
 * The OpenAI SIP route as an AiSession: the "AI" is a second SIP leg to sip.api.openai.com. Caller
 * frames go straight out on that leg and its frames come back as AI audio, so the ordinary Bridge
 * does the rest — with G.711 on both sides it is a pure relay (no transcoding); WhatsApp's Opus is
 * converted to G.711 by the Bridge. OpenAI plays out and handles barge-in itself in SIP mode.
 */
class OpenAiSipSession extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly inputFormat: AudioFormat;
  readonly outputFormat: AudioFormat;
  private leg: MediaLeg | undefined;
  private unsubscribe: (() => void) | undefined;
  private closed = false;
  private sideband: OpenAiSideband | undefined;
  /** A pending end_call: hang up once OpenAI has finished speaking. */
  private drain: { reason: string; since: number; quietSince: number | undefined; codec: FrameCodec } | undefined;
  openAiCallId: string | undefined;
  /** The first turn, once the caller is answered (sent over the sideband). */
  private firstTurn: RealtimeClientEvent | undefined;
  /** When each caller frame went out on the OpenAI leg: places audio_end_ms on our clock. */
  private readonly appendClock = new AppendClock();

  constructor(
    private readonly backend: OpenAiSipBackend,
    readonly opts: AiSessionOptions,
  ) {
    super();
    // OpenAI SIP speaks G.711 for certain: keep the caller's G.711 law, else (Opus) use µ-law.
    this.inputFormat = opts.legFormat.codec === 'pcma' ? PCMA_8K : PCMU_8K;
    this.outputFormat = this.inputFormat;
  }

  async start(): Promise<void> {
    const dialer = this.backend.deps.dialer();
    if (!dialer)
      throw new GatewayError(
        'ai_connect_failed',
        'OpenAI SIP route cannot dial: no SIP front is running (sip.enabled is false or it has not started)',
        this.opts.callId,
      );
    const call = this.backend.pendingCall(this);
    try {
      const law = this.inputFormat.codec === 'pcma' ? 'PCMA' : 'PCMU';
      this.leg = await dialer.dial({
        call,
        uri: this.backend.sipUri,
        from: call.info.from,
        to: call.info.to,
        headers: {
          [CALL_ID_HEADER]: this.opts.callId,
          'P-Asserted-Identity': `<sip:${call.info.from}@gateway.invalid>`,
        },
        codecs: law === 'PCMA' ? ['PCMA', 'PCMU'] : ['PCMU', 'PCMA'],
        timeoutMs: this.backend.deps.dialTimeoutMs ?? 15_000,
      });
    } finally {
      this.backend.settle(this);
    }
    if (this.closed) {
      await this.leg.close({ by: 'gateway', cause: 'call_ended' });
      return;
    }
    if (this.leg.format.codec !== this.inputFormat.codec) {
      await this.leg.close({ by: 'gateway', cause: 'codec_mismatch' });
      throw new GatewayError(
        'ai_connect_failed',
        `OpenAI answered ${this.leg.format.codec}, expected ${this.inputFormat.codec}`,
        this.opts.callId,
      );
    }
    const leg = this.leg;
    leg.on('hangup', (reason) => {
      this.opts.log.info({ reason }, 'OpenAI SIP leg ended');
      void this.close(`openai_${reason.cause}`);
    });
    this.unsubscribe = this.backend.deps.clock.subscribe(() => {
      const frame = leg.readFrame();
      if (frame) this.emit('audio', frame, undefined);
      if (this.drain) this.checkDrain(frame);
    });
    this.opts.log.info({ openAiCallId: this.openAiCallId }, 'OpenAI SIP leg up');
    this.emit('ready');
  }

  /**
   * OpenAI accepted the call: open its sideband (transcripts, tools). Runs beside the SIP dial and
   * never fails the call; the session only relays what it reports.
   */
  attachSideband(openAiCallId: string): void {
    const route = this.backend.route;
    if (!route.sideband || this.closed || this.sideband) return;
    const sideband = new OpenAiSideband({
      route,
      openAiCallId,
      callId: this.opts.callId,
      log: this.opts.log,
      control: {
        hangupAfterPlayout: (reason) => this.hangUpAfterSpeech(reason),
        transfer: (destination, o) => this.opts.control.transfer(destination, o),
        sendDtmf: this.opts.control.sendDtmf,
      },
    });
    sideband.on('transcript', (entry) => this.emit('transcript', entry));
    sideband.on('tool_call', (record) => this.emit('tool_call', record));
    // Turn latency: OpenAI's VAD events come over the sideband, its audio over the SIP leg.
    sideband.on('speech_started', () => this.emit('speech_started'));
    sideband.on('speech_stopped', (audioEndMs, hangoverMs, receivedAt) => {
      const endedAt = this.endOfSpeech(audioEndMs, hangoverMs, receivedAt);
      this.emit('speech_stopped', endedAt, endedAt);
    });
    sideband.on('output_started', (responseId) =>
      this.opts.log.debug({ responseId }, 'OpenAI started streaming a response into the SIP call'),
    );
    this.sideband = sideband;
    if (this.firstTurn) sideband.requestFirstTurn(this.firstTurn);
    sideband.start();
  }

  /**
   * end_call on a SIP call. OpenAI plays its goodbye itself, in real time, after the tool call has
   * reached us, so we wait until it has finished (output_audio_buffer.stopped on the sideband, and
   * its audio on our leg quiet), then stop relaying it and let the bridge end the call with the
   * tool's reason: call.end closes this session, whose BYE ends the OpenAI leg. Chosen over POST
   * /hangup: the call then ends with our cause (not "OpenAI hung up") at the moment the caller has
   * heard everything, with no extra REST round-trip that could fail.
   */
  private hangUpAfterSpeech(reason: string): void {
    if (this.closed || this.drain) return;
    this.opts.log.info({ reason }, 'hanging up once OpenAI has finished speaking');
    this.drain = { reason, since: performance.now(), quietSince: undefined, codec: createCodec(this.inputFormat) };
    if (!this.unsubscribe) this.finishDrain(); // the OpenAI leg is not up: nothing to wait for
  }

  private checkDrain(frame: Buffer | null): void {
    const d = this.drain!;
    const now = performance.now();
    const loud = frame !== null && dbfs(d.codec.decode(frame)) > DRAIN_QUIET_DBFS;
    if (loud || this.sideband?.speaking) d.quietSince = undefined;
    else d.quietSince ??= now;
    const quiet = d.quietSince !== undefined && now - d.quietSince >= DRAIN_QUIET_MS;
    if (quiet || now - d.since >= DRAIN_MAX_MS) this.finishDrain();
  }

  private finishDrain(): void {
    const d = this.drain!;
    this.unsubscribe?.(); // nothing more from OpenAI: the bridge's playout empties within a frame
    this.unsubscribe = undefined;
    this.opts.log.info({ reason: d.reason, waitedMs: Math.round(performance.now() - d.since) }, 'OpenAI done speaking');
    this.opts.control.hangupAfterPlayout(d.reason);
  }

  sendAudio(frame: Buffer): void {
    if (!this.leg) return;
    this.leg.writeFrame(frame);
    this.appendClock.mark();
  }

  /**
   * When the caller's speech ended, on our clock: the frame we sent at audio_end_ms minus the VAD's
   * trailing silence (the same mapping as the WebSocket backend; OpenAI's input timeline counts the
   * audio it was sent on this call). Implausible → the event's arrival minus the trailing silence.
   */
  private endOfSpeech(audioEndMs: unknown, hangoverMs: number, receivedAt: number): number {
    const fallback = receivedAt - hangoverMs;
    const mapped = this.appendClock.endOfSpeech(audioEndMs, hangoverMs);
    if (mapped === undefined || mapped > fallback || fallback - mapped > MAX_DETECTION_LAG_MS) return fallback;
    return mapped;
  }

  playoutCleared(): void {
    // OpenAI runs its own playout and interruption on a SIP call; nothing is queued on our side.
  }

  /**
   * The caller is answered: OpenAI takes the first turn, asked for over the sideband (a SIP call
   * carries no events). Without a sideband the gateway cannot ask; the accept's instructions then
   * carry the wish (see acceptSession) and the model speaks once the caller has.
   */
  startFirstTurn(): boolean {
    const route = this.backend.route;
    const ev = firstTurnEvent(route.firstTurn, route.instructions);
    if (!ev || !route.sideband) return false;
    // The accept (and so the sideband) may still be on its way when OpenAI's 200 reaches us.
    this.firstTurn = ev;
    this.sideband?.requestFirstTurn(ev);
    return true;
  }

  /** Caller keypad input: only possible through the sideband (OpenAI's SIP leg gets no text). */
  sendText(text: string): void {
    if (!this.sideband?.sendText(text)) this.opts.log.warn('keypad input not delivered: no OpenAI sideband connected');
  }

  /** Operator "say": only possible through the sideband (the SIP leg carries audio, not events). */
  say(text: string): void {
    if (!this.sideband?.say(text)) this.opts.log.warn('operator say ignored: no OpenAI sideband connected');
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.sideband?.close(reason);
    this.backend.settle(this);
    await this.leg?.close({ by: 'gateway', cause: reason });
    this.emit('closed', reason);
  }
}

/** One per openai-sip route: owns the pending-call table its webhook matches against. */
export class OpenAiSipBackend implements AiBackend {
  readonly kind = 'openai-sip';
  readonly api: OpenAiCallsApi;
  private readonly pending = new Map<string, { session: OpenAiSipSession; call: import('../../core/call.js').Call }>();

  constructor(
    readonly route: OpenAiSipRouteConfig,
    readonly deps: OpenAiSipDeps,
    private readonly lookupCall: (id: string) => import('../../core/call.js').Call | undefined,
  ) {
    this.api = new OpenAiCallsApi(route.apiBaseUrl, route.apiKey);
  }

  get sipUri(): string {
    return this.route.sipUri ?? `sip:${this.route.projectId}@sip.api.openai.com;transport=tls`;
  }

  open(opts: AiSessionOptions): AiSession {
    return new OpenAiSipSession(this, opts);
  }

  pendingCall(session: OpenAiSipSession) {
    const call = this.lookupCall(session.opts.callId);
    if (!call) throw new GatewayError('not_found', 'call vanished before dialing OpenAI', session.opts.callId);
    this.pending.set(session.opts.callId, { session, call });
    return call;
  }

  settle(session: OpenAiSipSession): void {
    this.pending.delete(session.opts.callId);
  }

  acceptSession(): AcceptSession {
    return {
      type: 'realtime',
      model: this.route.model,
      instructions: this.acceptInstructions(),
      audio: { output: { voice: this.route.voice } },
    };
  }

  /**
   * The route's instructions; without a sideband (no way to send response.create) the first turn's
   * wish goes here too, so the model at least opens with it when it first speaks.
   */
  private acceptInstructions(): string {
    const { instructions, firstTurn, sideband } = this.route;
    if (sideband || firstTurn.mode === 'none') return instructions;
    if (firstTurn.mode === 'text')
      return `${instructions}\n\nBegin the call by saying exactly: "${firstTurn.text ?? ''}"`;
    return firstTurn.instructions ? `${instructions}\n\nFor your first turn: ${firstTurn.instructions}` : instructions;
  }

  /** True when `realtime.call.incoming` names a call this backend is dialing (our header only). */
  owns(event: RealtimeCallIncoming): boolean {
    const id = gatewayCallIdOf(event);
    return id !== undefined && this.pending.has(id);
  }

  /** `realtime.call.incoming`: accept it if it is one of ours (matched by our header only), else reject. */
  async handleIncoming(event: RealtimeCallIncoming): Promise<boolean> {
    const id = gatewayCallIdOf(event);
    const match = id !== undefined ? this.pending.get(id) : undefined;
    if (!match) return false;
    match.session.openAiCallId = event.data.call_id;
    match.call.log.info({ openAiCallId: event.data.call_id }, 'accepting OpenAI SIP call');
    await this.api.accept(event.data.call_id, this.acceptSession(), match.call.id);
    match.session.attachSideband(event.data.call_id);
    return true;
  }
}
