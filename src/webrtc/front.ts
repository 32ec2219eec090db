import type { Call } from '../core/call.js';
import { GatewayError } from '../core/errors.js';
import type { HangupReason } from '../core/media-leg.js';
import type { Front, GatewayContext, MediaSessionRequest } from '../gateway.js';
import { GraphClient, GraphError } from './graph.js';
import { whatsappWebhookRouter, type CallEvent } from './webhook.js';
import { WebRtcLeg, type WebRtcLegOptions } from './webrtc-leg.js';

export const WEBHOOK_PATH = '/webhooks/whatsapp';

/** A business-initiated call the user never picks up is abandoned after this long. */
const RING_TIMEOUT_MS = 60_000;

interface Active {
  call: Call;
  leg: WebRtcLeg;
  direction: 'inbound' | 'outbound';
  /** Meta knows the call is live (pre_accept/accept/connect succeeded): end it with terminate. */
  signalled: boolean;
  route: string | undefined;
  /** Media-only session: an external handler owns the WhatsApp signalling, we send none. */
  mediaOnly?: boolean;
}

export interface OutboundCallRequest {
  to: string;
  route?: string;
}

const e164 = (n: string) => (n ? (n.startsWith('+') ? n : `+${n}`) : n);
const digits = (n: string) => n.replace(/^\+/, '');

/**
 * WhatsApp Business Calling front: Meta's `calls` webhooks in, Graph API call control out, one
 * werift WebRTC leg per call. Inbound: offer → answer → pre_accept → ICE+DTLS connected → accept →
 * bridge to the AI. Outbound: our offer via Graph `connect` → answer by webhook → media → bridge.
 */
export class WhatsAppFront implements Front {
  readonly name = 'whatsapp';
  readonly graph: GraphClient;
  private readonly active = new Map<string, Active>();
  /** Media-only sessions (POST /v1/sessions/start) in progress, for limits.maxCalls.mediaSessions. */
  private readonly mediaCalls = new Set<Call>();
  private started = false;
  private draining = false;

  constructor(
    private readonly ctx: GatewayContext,
    graph?: GraphClient,
  ) {
    const wa = ctx.config.whatsapp;
    this.graph =
      graph ??
      new GraphClient({
        baseUrl: wa.graphBaseUrl,
        version: wa.graphVersion,
        phoneNumberId: wa.phoneNumberId,
        accessToken: wa.accessToken,
        log: ctx.log.child({ front: 'whatsapp', component: 'graph' }),
      });
  }

  start(): Promise<void> {
    const wa = this.ctx.config.whatsapp;
    const log = this.ctx.log.child({ front: 'whatsapp' });
    this.ctx.app.use(
      WEBHOOK_PATH,
      whatsappWebhookRouter({
        appSecret: wa.appSecret,
        verifyToken: wa.verifyToken,
        log,
        onEvent: (ev) => this.onEvent(ev),
      }),
    );
    this.ctx.dialers.set('whatsapp', (req) => this.startOutboundCall({ to: req.to, route: req.route }));
    this.ctx.mediaSessions = {
      start: (req) => this.startMediaSession(req),
      stop: (id) => this.stopMediaSession(id),
    };
    this.started = true;
    return Promise.resolve();
  }

  drain(): void {
    this.draining = true;
  }

  async stop(): Promise<void> {
    this.started = false;
    this.ctx.dialers.delete('whatsapp');
    await Promise.all([...this.active.values()].map((a) => a.call.end({ by: 'gateway', cause: 'shutdown' })));
  }

  describe(): Record<string, unknown> {
    const wa = this.ctx.config.whatsapp;
    return {
      webhook: WEBHOOK_PATH,
      graph: `${wa.graphBaseUrl}/${wa.graphVersion}`,
      publicIp: wa.publicIp,
      udp: `${wa.udpPortMin}-${wa.udpPortMax}`,
    };
  }

  ready(): boolean {
    return this.started;
  }

  /** Live WhatsApp legs by WhatsApp call id (tests, diagnostics). */
  legFor(waCallId: string): WebRtcLeg | undefined {
    return this.active.get(waCallId)?.leg;
  }

  get activeCount(): number {
    return this.active.size;
  }

  /** `limits.maxCalls`: why a new call of this kind would exceed a cap, or undefined. */
  private overLimit(kind: 'inbound' | 'outbound' | 'media'): string | undefined {
    const max = this.ctx.config.limits.maxCalls;
    const all = this.ctx.registry.countActive((c) => c.info.front === 'whatsapp');
    if (all >= max.whatsapp) return `call limit reached (${max.whatsapp} concurrent calls)`;
    if (kind === 'outbound') {
      const out = this.ctx.registry.countActive((c) => c.info.front === 'whatsapp' && c.info.direction === 'outbound');
      if (out >= max.whatsappOutbound) return `dial-out limit reached (${max.whatsappOutbound} concurrent calls)`;
    }
    if (kind === 'media' && this.mediaCalls.size >= max.mediaSessions)
      return `media session limit reached (${max.mediaSessions} concurrent sessions)`;
    return undefined;
  }

  private async onEvent(ev: CallEvent): Promise<void> {
    if (!this.started) return;
    switch (ev.kind) {
      case 'connect':
        if (ev.sdpType === 'offer') return this.onOffer(ev);
        return this.onAnswer(ev.waCallId, ev.sdp);
      case 'terminate': {
        const a = this.active.get(ev.waCallId);
        const detail = [
          ev.status,
          ev.durationSec !== undefined ? `${ev.durationSec}s` : '',
          ...ev.errors.map((e) => `${e.code}: ${e.message}`),
        ]
          .filter(Boolean)
          .join(' ');
        if (!a) {
          this.ctx.log.debug({ waCallId: ev.waCallId, status: ev.status }, 'terminate for unknown WhatsApp call');
          return;
        }
        a.call.log.info(
          { status: ev.status, durationSec: ev.durationSec, errors: ev.errors },
          'WhatsApp terminate webhook',
        );
        await a.call.end({ by: 'remote', cause: 'terminate', detail });
        return;
      }
      case 'status': {
        const a = this.active.get(ev.waCallId);
        if (!a) return;
        a.call.log.info({ status: ev.status, errors: ev.errors }, 'WhatsApp call status');
        if (ev.status === 'REJECTED')
          await a.call.end({ by: 'remote', cause: 'rejected', detail: ev.errors[0]?.message });
        return;
      }
    }
  }

  private newLeg(callId: string, call: Call, waCallId: () => string | undefined): WebRtcLegOptions {
    const wa = this.ctx.config.whatsapp;
    return {
      callId,
      log: call.log,
      publicIp: wa.publicIp,
      portRange: [wa.udpPortMin, wa.udpPortMax],
      inactivityMs: wa.rtpTimeoutSec * 1000,
      onClose: (reason) => this.signalEnd(waCallId(), reason),
    };
  }

  /** The leg closed: tell Meta unless Meta ended it (or the call belongs to an external handler). */
  private async signalEnd(waCallId: string | undefined, reason: HangupReason): Promise<void> {
    if (!waCallId) return;
    const a = this.active.get(waCallId);
    this.active.delete(waCallId);
    if (!a || a.mediaOnly || reason.by === 'remote') return;
    try {
      if (a.signalled) {
        a.call.log.info({ reason }, 'terminating WhatsApp call via Graph');
        await this.graph.terminate(waCallId, a.call.id);
      } else if (a.direction === 'inbound') {
        a.call.log.info({ reason }, 'rejecting WhatsApp call via Graph');
        await this.graph.reject(waCallId, a.call.id);
      }
    } catch (err) {
      a.call.log.warn({ err: (err as Error).message }, 'Graph terminate failed');
    }
  }

  private async onOffer(ev: Extract<CallEvent, { kind: 'connect' }>): Promise<void> {
    const { waCallId } = ev;
    if (this.active.has(waCallId) || this.ctx.registry.findByExternalId(waCallId)) return;
    const log = this.ctx.log.child({ front: 'whatsapp', waCallId });
    if (this.draining || this.ctx.draining) {
      log.info('draining: rejecting WhatsApp call');
      await this.graph.reject(waCallId).catch((err: Error) => log.warn({ err: err.message }, 'reject failed'));
      return;
    }
    const refusal = this.overLimit('inbound');
    if (refusal) {
      log.warn({ limit: refusal }, 'WhatsApp call limit reached: rejecting call');
      await this.graph.reject(waCallId).catch((err: Error) => log.warn({ err: err.message }, 'reject failed'));
      return;
    }
    const call = this.ctx.registry.create({
      front: 'whatsapp',
      from: e164(ev.from),
      to: e164(ev.to),
      direction: 'inbound',
      externalId: waCallId,
    });
    call.log.info({ waCallId, caller: ev.callerName }, 'WhatsApp call offered');
    let leg: WebRtcLeg;
    let answerSdp: string;
    try {
      ({ leg, answerSdp } = await WebRtcLeg.answer(
        ev.sdp,
        this.newLeg(call.id, call, () => waCallId),
      ));
    } catch (err) {
      const detail = (err as Error).message;
      call.log.warn({ err: detail }, 'cannot answer WhatsApp offer: rejecting');
      await this.graph.reject(waCallId, call.id).catch(() => {});
      await call.end({ by: 'error', cause: 'bad_offer', detail });
      return;
    }
    const entry: Active = { call, leg, direction: 'inbound', signalled: false, route: undefined };
    this.active.set(waCallId, entry);
    call.onEnd(() => leg.close(call.endReason ?? { by: 'gateway', cause: 'ended' }));
    try {
      await this.graph.preAccept(waCallId, answerSdp, call.id);
      entry.signalled = true;
      await this.mediaThenBridge(entry, async () => {
        await this.graph.accept(waCallId, answerSdp, call.id);
        call.transition('answered');
      });
    } catch (err) {
      await this.failCall(call, err);
    }
  }

  /** Wait for ICE+DTLS (bounded by mediaTimeoutSec), run `beforeBridge`, then hand the leg to the AI. */
  private async mediaThenBridge(a: Active, beforeBridge?: () => Promise<void>): Promise<void> {
    const timeoutMs = this.ctx.config.whatsapp.mediaTimeoutSec * 1000;
    try {
      await a.leg.waitConnected(timeoutMs);
    } catch (err) {
      if (a.call.ended) return;
      const detail = (err as Error).message;
      a.call.log.warn({ detail }, 'WhatsApp media never connected: terminating call');
      await a.call.end({ by: 'timeout', cause: 'media_timeout', detail });
      return;
    }
    if (a.call.ended) return;
    await beforeBridge?.();
    if (a.call.ended) return;
    await this.ctx.connector.connect(a.call, a.leg, a.route);
  }

  private async failCall(call: Call, err: unknown): Promise<void> {
    if (call.ended) return;
    const e = err as Error;
    const meta = err instanceof GraphError ? err.meta : undefined;
    call.log.error({ err: e.message, meta }, 'WhatsApp call setup failed');
    await call.end({
      by: 'error',
      cause: err instanceof GraphError ? 'graph_error' : 'setup_failed',
      detail: e.message,
    });
  }

  /**
   * Business-initiated call: send our offer with Graph `connect`; the user's answer arrives by
   * webhook. Resolves with the ringing call once Meta accepted the request; Meta's permission
   * errors (e.g. 138006, no call permission) reject with a GraphError carrying Meta's fields.
   */
  async startOutboundCall(req: OutboundCallRequest): Promise<Call> {
    if (this.draining || this.ctx.draining) throw new GatewayError('limit_reached', 'draining: no new calls');
    if (req.route && !this.ctx.router.routeConfig(req.route)) {
      throw new GatewayError('not_found', `route "${req.route}" is not configured`);
    }
    const refusal = this.overLimit('outbound');
    if (refusal) throw new GatewayError('limit_reached', `WhatsApp ${refusal}`);
    const call = this.ctx.registry.create({
      front: 'whatsapp',
      from: e164(this.ctx.config.whatsapp.phoneNumberId),
      to: e164(req.to),
      direction: 'outbound',
    });
    let waCallId: string | undefined;
    let offered: Awaited<ReturnType<typeof WebRtcLeg.offer>>;
    try {
      offered = await WebRtcLeg.offer(this.newLeg(call.id, call, () => waCallId));
    } catch (err) {
      // Without this the call would stay "ringing" in the registry for ever (and block drain).
      await call.end({ by: 'error', cause: 'setup_failed', detail: (err as Error).message });
      throw err;
    }
    const { leg, offerSdp } = offered;
    call.onEnd(() => leg.close(call.endReason ?? { by: 'gateway', cause: 'ended' }));
    try {
      waCallId = await this.graph.connect(digits(req.to), offerSdp, call.id, call.id);
    } catch (err) {
      const e = err as GraphError;
      call.log.warn({ err: e.message, meta: e.meta }, 'WhatsApp business-initiated call refused by Meta');
      await call.end({
        by: 'error',
        cause: e.isPermissionError ? 'no_call_permission' : 'graph_error',
        detail: e.message,
      });
      throw err;
    }
    call.info.externalId = waCallId;
    if (call.ended) {
      // Ended (operator, drain, max duration) while `connect` was in flight: the leg's close could
      // not name the call to Meta yet, so tell Meta now or the user's phone rings on.
      call.log.info({ waCallId }, 'call ended while connect was in flight: terminating via Graph');
      await this.graph
        .terminate(waCallId, call.id)
        .catch((err: Error) => call.log.warn({ err: err.message }, 'Graph terminate failed'));
      return call;
    }
    this.active.set(waCallId, { call, leg, direction: 'outbound', signalled: true, route: req.route });
    call.log.info({ waCallId, to: call.info.to }, 'WhatsApp business-initiated call placed');
    const ring = setTimeout(() => {
      if (call.state === 'ringing')
        void call.end({ by: 'timeout', cause: 'no_answer', detail: `no answer in ${RING_TIMEOUT_MS} ms` });
    }, RING_TIMEOUT_MS);
    call.onEnd(() => clearTimeout(ring));
    return call;
  }

  private async onAnswer(waCallId: string, sdp: string): Promise<void> {
    const a = this.active.get(waCallId);
    if (!a || a.direction !== 'outbound') {
      this.ctx.log.debug({ waCallId }, 'SDP answer for unknown WhatsApp call');
      return;
    }
    try {
      await a.leg.acceptAnswer(sdp);
      a.call.log.info('WhatsApp user answered; connecting media');
      await this.mediaThenBridge(a, async () => a.call.transition('answered'));
    } catch (err) {
      await this.failCall(a.call, err);
    }
  }

  /** Media-only mode: an external webhook handler owns signalling and asks us for the answer. */
  private async startMediaSession(req: MediaSessionRequest): Promise<{ sdpAnswer: string; call: Call }> {
    if (this.active.has(req.callId)) throw new GatewayError('invalid_state', `session ${req.callId} already exists`);
    const refusal = this.overLimit('media');
    if (refusal) throw new GatewayError('limit_reached', `WhatsApp ${refusal}`);
    const call = this.ctx.registry.create({
      front: 'whatsapp',
      from: e164(req.fromNumber),
      to: e164(req.toNumber),
      direction: 'inbound',
      externalId: req.callId,
    });
    this.mediaCalls.add(call);
    call.onEnd(() => void this.mediaCalls.delete(call));
    try {
      const { leg, answerSdp } = await WebRtcLeg.answer(
        req.sdpOffer,
        this.newLeg(call.id, call, () => req.callId),
      );
      const entry: Active = { call, leg, direction: 'inbound', signalled: false, route: req.route, mediaOnly: true };
      this.active.set(req.callId, entry);
      call.onEnd(() => leg.close(call.endReason ?? { by: 'gateway', cause: 'ended' }));
      void this.mediaThenBridge(entry, async () => call.transition('answered')).catch((err) =>
        this.failCall(call, err),
      );
      return { sdpAnswer: answerSdp, call };
    } catch (err) {
      await call.end({ by: 'error', cause: 'bad_offer', detail: (err as Error).message });
      throw err;
    }
  }

  private async stopMediaSession(id: string): Promise<boolean> {
    const a = this.active.get(id);
    if (!a?.mediaOnly) return false;
    await a.call.end({ by: 'operator', cause: 'session_stopped' });
    return true;
  }
}
