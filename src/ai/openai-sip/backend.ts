import type { OpenAiSipRouteConfig } from '../../config/schema.js';
import { type AudioFormat, PCMA_8K, PCMU_8K } from '../../core/audio/format.js';
import { GatewayError } from '../../core/errors.js';
import type { FrameClock } from '../../core/frame-clock.js';
import type { LegDialer } from '../../core/leg-dialer.js';
import type { Logger } from '../../core/logger.js';
import type { MediaLeg } from '../../core/media-leg.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { AiBackend, AiSession, AiSessionEvents, AiSessionOptions } from '../session.js';
import { type AcceptSession, OpenAiCallsApi } from './calls-api.js';
import type { RealtimeCallIncoming } from './webhook.js';

/** The header that carries our call id to OpenAI, so its webhook can be matched to the call. */
export const CALL_ID_HEADER = 'X-Gateway-Call-Id';

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
  openAiCallId: string | undefined;

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
      throw new GatewayError('ai_connect_failed', 'OpenAI SIP route needs the SIP front enabled', this.opts.callId);
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
    });
    this.opts.log.info({ openAiCallId: this.openAiCallId }, 'OpenAI SIP leg up');
    this.emit('ready');
  }

  sendAudio(frame: Buffer): void {
    this.leg?.writeFrame(frame);
  }

  playoutCleared(): void {
    // OpenAI runs its own playout and interruption on a SIP call; nothing is queued on our side.
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
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
      instructions: this.route.instructions,
      audio: { output: { voice: this.route.voice } },
    };
  }

  /** `realtime.call.incoming`: accept it if it is one of ours (matched by our header only), else reject. */
  async handleIncoming(event: RealtimeCallIncoming): Promise<boolean> {
    const header = event.data.sip_headers.find((h) => h.name.toLowerCase() === CALL_ID_HEADER.toLowerCase());
    const match = header ? this.pending.get(header.value.trim()) : undefined;
    if (!match) return false;
    match.session.openAiCallId = event.data.call_id;
    match.call.log.info({ openAiCallId: event.data.call_id }, 'accepting OpenAI SIP call');
    await this.api.accept(event.data.call_id, this.acceptSession(), match.call.id);
    return true;
  }
}
