import { randomUUID } from 'node:crypto';
import type { Call } from '../core/call.js';
import type { Connected } from '../core/connector.js';
import { GatewayError } from '../core/errors.js';
import type { HangupReason } from '../core/media-leg.js';
import type { ResolvedRoute } from '../core/router.js';
import type { Front, GatewayContext } from '../gateway.js';
import {
  digits,
  e164,
  endIfUnanswered,
  terminateDetail,
  failCall,
  signalGraphEnd,
  waitMedia,
  type ActiveCall,
} from './active-call.js';
import { admitWhatsAppCall } from './admission.js';
import { acceptForwardedEvents, forwardToOwner } from './event-forwarding.js';
import { graphMessage, webhookMessage } from './call-trace.js';
import { GraphClient, GraphError } from './graph.js';
import { EndedCalls } from './ended-calls.js';
import { MediaSessions } from './media-sessions.js';
import { BusinessNumbers, type BusinessNumber } from './numbers.js';
import { OutboundAttempts } from './outbound-attempts.js';
import { WhatsAppPartyDialer, type WhatsAppCallHost } from './party-dialer.js';
import { whatsappWebhookRouter, type CallEvent } from './webhook.js';
import { WebRtcLeg, type WebRtcLegOptions } from './webrtc-leg.js';
/** How long an offer's call id is claimed cluster-wide (Meta redelivering to another instance). */
const OFFER_CLAIM_MS = 10 * 60_000;

export const WEBHOOK_PATH = '/webhooks/whatsapp';

export interface OutboundCallRequest {
  to: string;
  route?: string;
  /** Which business number calls (display number or phone-number ID); default the first. */
  from?: string;
}

/**
 * WhatsApp Business Calling front: Meta's `calls` webhooks in, Graph API call control out, one
 * werift WebRTC leg per call. Inbound: offer → answer → pre_accept → (ICE+DTLS connected and the AI
 * ready) → accept → bridge. Outbound: AI ready → our offer via Graph `connect` → answer by webhook →
 * media → bridge. Either way the caller is never "connected" to an AI that is not there.
 */
export class WhatsAppFront implements Front, WhatsAppCallHost {
  readonly name = 'whatsapp';
  readonly graph: GraphClient;
  readonly numbers: BusinessNumbers;
  private readonly active = new Map<string, ActiveCall>();
  private readonly unconfirmed = new OutboundAttempts<ActiveCall>();
  /** Calls that ended here: their late webhooks (Meta's terminate after ours) are ignored. */
  private readonly ended = new EndedCalls();
  private readonly mediaSessions: MediaSessions;
  private started = false;
  private draining = false;

  constructor(
    private readonly ctx: GatewayContext,
    graph?: GraphClient,
  ) {
    const wa = ctx.config.whatsapp;
    this.numbers = new BusinessNumbers(wa);
    this.mediaSessions = new MediaSessions(ctx, this.active, (call, entry) => this.legOptions(call, entry));
    this.graph =
      graph ??
      new GraphClient({
        baseUrl: wa.graphBaseUrl,
        version: wa.graphVersion,
        accessToken: wa.accessToken,
        timeoutMs: wa.graphTimeoutMs,
        log: ctx.log.child({ front: 'whatsapp', component: 'graph' }),
        onTrace: (callId, trace) => ctx.registry.get(callId)?.addSignalling(graphMessage(trace)),
      });
  }

  start(): Promise<void> {
    const wa = this.ctx.config.whatsapp;
    const log = this.ctx.log.child({ front: 'whatsapp' });
    for (const n of this.numbers.list()) {
      if (!n.displayNumber)
        log.warn(
          { phoneNumberId: n.phoneNumberId },
          'no displayNumber configured for this WhatsApp number: outbound calls show it once a webhook names it',
        );
    }
    this.ctx.app.use(
      WEBHOOK_PATH,
      whatsappWebhookRouter({
        appSecret: wa.appSecret,
        verifyToken: wa.verifyToken,
        log,
        onEvent: (ev) => this.onEvent(ev),
      }),
    );
    acceptForwardedEvents(
      this.ctx,
      log,
      (waCallId) => this.active.has(waCallId),
      (ev) => this.onEvent(ev, true),
    );
    this.ctx.partyDialers.set('whatsapp', new WhatsAppPartyDialer(this, this.ctx));
    this.ctx.dialers.set('whatsapp', (req) => this.startOutboundCall({ to: req.to, route: req.route, from: req.from }));
    this.ctx.mediaSessions = {
      start: (req) => this.mediaSessions.start(req),
      stop: (id) => this.mediaSessions.stop(id),
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
    this.ctx.partyDialers.delete('whatsapp');
    await Promise.all([...this.active.values()].map((a) => a.call.end({ by: 'gateway', cause: 'shutdown' })));
    this.graph.close();
  }

  describe(): Record<string, unknown> {
    const wa = this.ctx.config.whatsapp;
    return {
      webhook: WEBHOOK_PATH,
      graph: `${wa.graphBaseUrl}/${wa.graphVersion}`,
      numbers: this.numbers.list().map((n) => `${n.displayNumber || '?'} (${n.phoneNumberId})`),
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
    return this.active.size + this.unconfirmed.size;
  }

  private async onEvent(ev: CallEvent, forwarded = false): Promise<void> {
    if (!this.started) return;
    const number = this.numbers.get(ev.phoneNumberId);
    if (!number) {
      this.ctx.log.debug(
        { waCallId: ev.waCallId, phoneNumberId: ev.phoneNumberId, kind: ev.kind },
        'WhatsApp webhook for a business number this gateway does not serve: ignored',
      );
      return;
    }
    this.numbers.learn(number.phoneNumberId, ev.displayNumber);
    if (ev.kind === 'connect' && ev.sdpType === 'offer') return this.onOffer(ev, number);
    if (this.ended.has(ev.waCallId)) {
      this.ctx.log.debug({ waCallId: ev.waCallId, kind: ev.kind }, 'WhatsApp webhook for a call already ended here');
      return;
    }
    const a = this.active.get(ev.waCallId) ?? this.confirm(ev);
    if (!a) {
      if (!forwarded && (await forwardToOwner(this.ctx, ev))) return;
      this.ctx.log.debug({ waCallId: ev.waCallId, kind: ev.kind }, 'WhatsApp webhook for an unknown call');
      return;
    }
    a.call.addSignalling(webhookMessage(ev));
    if (a.party) return a.party.onEvent(ev);
    switch (ev.kind) {
      case 'connect':
        return this.onAnswer(a, ev.sdp);
      case 'terminate': {
        const detail = terminateDetail(ev);
        a.call.log.info({ status: ev.status, durationSec: ev.durationSec, errors: ev.errors }, 'WhatsApp terminate');
        await a.call.end({ by: 'remote', cause: 'terminate', detail });
        return;
      }
      case 'status':
        a.call.log.info({ status: ev.status, errors: ev.errors }, 'WhatsApp call status');
        if (ev.status === 'REJECTED')
          await a.call.end({ by: 'remote', cause: 'rejected', detail: ev.errors[0]?.message });
    }
  }

  /** A webhook for a business call whose `connect` response we never got: adopt Meta's call id. */
  private confirm(ev: CallEvent): ActiveCall | undefined {
    const user = ev.kind === 'connect' ? ev.to : ev.user;
    const a = this.unconfirmed.claim({ phoneNumberId: ev.phoneNumberId, opaque: ev.opaque, user });
    if (!a) return undefined;
    a.waCallId = ev.waCallId;
    a.signalled = true;
    a.call.info.externalId = ev.waCallId;
    this.hold(a);
    a.call.log.info(
      { waCallId: ev.waCallId, by: ev.opaque ? 'opaque data' : 'user number' },
      'WhatsApp call id learned',
    );
    return a;
  }

  /** Webhooks for the call's Meta id reach it from now on, here and (cluster) from other instances. */
  hold(a: ActiveCall): void {
    this.active.set(a.waCallId!, a);
    this.aliasCall(a.call, a.waCallId!);
  }

  /** Other instances find this call's owner by Meta's call id (their webhooks, their API). */
  private aliasCall(call: Call, waCallId: string): void {
    this.ctx.cluster
      .alias('whatsapp', waCallId, call.id)
      .catch((err: Error) => call.log.warn({ err: err.message }, 'cluster state: WhatsApp call id not shared'));
  }

  legOptions(call: Call, entry: () => ActiveCall | undefined): WebRtcLegOptions {
    const wa = this.ctx.config.whatsapp;
    return {
      callId: call.id,
      log: call.log,
      publicIp: wa.publicIp,
      portRange: [wa.udpPortMin, wa.udpPortMax],
      inactivityMs: wa.rtpTimeoutSec * 1000,
      onClose: (reason) => this.signalEnd(entry(), reason),
    };
  }

  /** The leg closed: tell Meta unless Meta ended it (or the call belongs to an external handler). */
  private async signalEnd(a: ActiveCall | undefined, reason: HangupReason): Promise<void> {
    if (!a) return;
    if (a.waCallId) {
      this.active.delete(a.waCallId);
      this.ended.add(a.waCallId);
    }
    this.unconfirmed.delete(a.call.id);
    await signalGraphEnd(a, reason);
  }

  get mediaTimeoutMs(): number {
    return this.ctx.config.whatsapp.mediaTimeoutSec * 1000;
  }

  private routeFor(call: Call, number: BusinessNumber | undefined, requested?: string): ResolvedRoute {
    if (requested) {
      const config = this.ctx.router.routeConfig(requested);
      if (!config) throw new GatewayError('not_found', `route "${requested}" is not configured`, call.id);
      return { name: requested, config, because: 'requested' };
    }
    return this.ctx.router.resolve(call.info, call.id, number?.route);
  }

  private async onOffer(ev: Extract<CallEvent, { kind: 'connect' }>, number: BusinessNumber): Promise<void> {
    const { waCallId } = ev;
    if (this.active.has(waCallId) || this.ctx.registry.findByExternalId(waCallId)) return;
    const graph = this.graph.forNumber(number.phoneNumberId);
    const log = this.ctx.log.child({ front: 'whatsapp', waCallId });
    // The instance that received the offer takes the call: it holds the SDP and Meta's clock is
    // running, and the load balancer already spread the offers; the cluster-wide caps still apply.
    // Meta redelivering the offer to another instance must not answer it twice.
    const cluster = this.ctx.cluster;
    if (cluster.shared && !(await cluster.claim(`wa-offer:${waCallId}`, OFFER_CLAIM_MS).catch(() => true))) {
      log.info('WhatsApp offer already taken by another instance: ignored');
      return;
    }
    if (this.draining || this.ctx.draining) {
      log.info('draining: rejecting WhatsApp call');
      await graph.reject(waCallId).catch((err: Error) => log.warn({ err: err.message }, 'reject failed'));
      return;
    }
    const callId = randomUUID();
    const refusal = await admitWhatsAppCall(this.ctx, 'inbound', callId);
    if (refusal) {
      log.warn({ limit: refusal }, 'WhatsApp call limit reached: rejecting call');
      await graph.reject(waCallId).catch((err: Error) => log.warn({ err: err.message }, 'reject failed'));
      return;
    }
    const call = this.ctx.registry.create(
      {
        front: 'whatsapp',
        from: e164(ev.from),
        to: e164(ev.to),
        direction: 'inbound',
        externalId: waCallId,
      },
      callId,
    );
    this.aliasCall(call, waCallId);
    call.addSignalling(webhookMessage(ev));
    call.log.info({ waCallId, caller: ev.callerName, phoneNumberId: number.phoneNumberId }, 'WhatsApp call offered');
    const ref: { entry?: ActiveCall } = {};
    let leg: WebRtcLeg;
    let answerSdp: string;
    let route: ResolvedRoute;
    try {
      route = this.routeFor(call, number);
      ({ leg, answerSdp } = await WebRtcLeg.answer(
        ev.sdp,
        this.legOptions(call, () => ref.entry),
      ));
    } catch (err) {
      const detail = (err as Error).message;
      call.log.warn({ err: detail }, 'cannot answer WhatsApp offer: rejecting');
      await graph.reject(waCallId, call.id).catch(() => {});
      await call.end({ by: 'error', cause: 'bad_offer', detail });
      return;
    }
    const entry: ActiveCall = { call, leg, direction: 'inbound', waCallId, graph, signalled: false };
    ref.entry = entry;
    this.active.set(waCallId, entry);
    call.onEnd(() => leg.close(call.endReason ?? { by: 'gateway', cause: 'ended' }));
    try {
      await graph.preAccept(waCallId, answerSdp, call.id);
    } catch (err) {
      // pre_accept only speeds media up; when its outcome is unknown, accept still decides.
      if (!(err instanceof GraphError && err.outcome === 'unknown')) return failCall(call, err);
      call.log.warn({ err: err.message }, 'pre_accept outcome unknown: carrying on');
    }
    entry.signalled = true;
    // Media first, then the AI, then accept: the caller keeps ringing until both are ready. Not in
    // parallel: AI set-up work during the DTLS handshake can delay it past werift's 500 ms
    // retransmit, and werift 0.24 fails a handshake that sees a repeated HelloVerifyRequest.
    // A refusing AI ends the call in the connector (route onAiUnavailable: reject), and signalEnd
    // then sends Graph reject since nothing was accepted; `apologise` resolves with a spoken apology.
    if (!(await waitMedia(entry, this.mediaTimeoutMs)) || call.ended) return;
    let prepared: Connected;
    try {
      prepared = await this.ctx.connector.prepare(call, leg, route);
    } catch (err) {
      call.log.warn({ err: (err as Error).message, route: route.name }, 'AI unavailable for WhatsApp call');
      return;
    }
    if (call.ended || !(await this.accept(entry, answerSdp))) return;
    prepared.answered();
  }

  /**
   * accept, sent once. An accept whose outcome is unknown (timeout, reset, 5xx) is not repeated —
   * it may have answered the call, and Meta refuses a second one — so the call carries on: if Meta
   * did not take it, its terminate webhook (or the media timeout) ends the call.
   */
  private async accept(a: ActiveCall, answerSdp: string): Promise<boolean> {
    try {
      a.accepted = true; // from here on, terminate (an unknown outcome may have answered the call)
      await a.graph!.accept(a.waCallId!, answerSdp, a.call.id);
    } catch (err) {
      if (!(err instanceof GraphError && err.outcome === 'unknown')) {
        await failCall(a.call, err);
        return false;
      }
      a.call.log.warn({ err: err.message }, 'accept outcome unknown: not repeating it, carrying on');
    }
    if (a.call.ended) return false;
    a.call.transition('answered');
    return true;
  }

  /**
   * Business-initiated call: the AI is made ready first (a user who answers at once must hear it),
   * then our offer goes out with Graph `connect`; the user's answer arrives by webhook. Resolves with
   * the ringing call once Meta took the request — or may have: a `connect` whose response was lost
   * is never sent again, and the call's webhooks are matched to it instead. Meta's errors (e.g.
   * 138006, no call permission) reject with a GraphError carrying Meta's fields.
   */
  async startOutboundCall(req: OutboundCallRequest): Promise<Call> {
    if (this.draining || this.ctx.draining) throw new GatewayError('limit_reached', 'draining: no new calls');
    if (req.route && !this.ctx.router.routeConfig(req.route)) {
      throw new GatewayError('not_found', `route "${req.route}" is not configured`);
    }
    const number = this.numbers.pick(req.from);
    if (!number) throw new GatewayError('not_found', `"${req.from}" is not a WhatsApp business number of this gateway`);
    const callId = randomUUID();
    const refusal = await admitWhatsAppCall(this.ctx, 'outbound', callId);
    if (refusal) throw new GatewayError('limit_reached', `WhatsApp ${refusal}`);
    const graph = this.graph.forNumber(number.phoneNumberId);
    const call = this.ctx.registry.create(
      {
        front: 'whatsapp',
        from: e164(number.displayNumber),
        to: e164(req.to),
        direction: 'outbound',
      },
      callId,
    );
    const ref: { entry?: ActiveCall } = {};
    let offered: Awaited<ReturnType<typeof WebRtcLeg.offer>>;
    try {
      offered = await WebRtcLeg.offer(this.legOptions(call, () => ref.entry));
    } catch (err) {
      // Without this the call would stay "ringing" in the registry for ever (and block drain).
      await call.end({ by: 'error', cause: 'setup_failed', detail: (err as Error).message });
      throw err;
    }
    const { leg, offerSdp } = offered;
    call.onEnd(() => leg.close(call.endReason ?? { by: 'gateway', cause: 'ended' }));
    const entry: ActiveCall = { call, leg, direction: 'outbound', waCallId: undefined, graph, signalled: false };
    ref.entry = entry;
    try {
      entry.prepared = await this.ctx.connector.prepare(call, leg, this.routeFor(call, number, req.route));
    } catch (err) {
      await call.end({ by: 'error', cause: 'ai_unavailable', detail: (err as Error).message });
      throw err;
    }
    if (call.ended) throw new GatewayError('invalid_state', 'call ended before it was placed', call.id);
    try {
      entry.waCallId = await graph.connect(digits(req.to), offerSdp, call.id, call.id);
    } catch (err) {
      const e = err as GraphError;
      if (e instanceof GraphError && e.outcome === 'unknown') {
        call.log.warn({ err: e.message }, 'connect outcome unknown: not repeating it; waiting for its webhooks');
        this.unconfirmed.add({ callId: call.id, phoneNumberId: number.phoneNumberId, user: digits(req.to) }, entry);
        endIfUnanswered(call);
        return call;
      }
      call.log.warn({ err: e.message, meta: e.meta }, 'WhatsApp business-initiated call refused by Meta');
      await call.end({
        by: 'error',
        cause: e instanceof GraphError && e.isPermissionError ? 'no_call_permission' : 'graph_error',
        detail: e.message,
      });
      throw err;
    }
    entry.signalled = true;
    call.info.externalId = entry.waCallId;
    if (call.ended) {
      // Ended (operator, drain, max duration) while `connect` was in flight: the leg's close could
      // not name the call to Meta yet, so tell Meta now or the user's phone rings on.
      call.log.info({ waCallId: entry.waCallId }, 'call ended while connect was in flight: terminating via Graph');
      await graph
        .terminate(entry.waCallId, call.id)
        .catch((err: Error) => call.log.warn({ err: err.message }, 'Graph terminate failed'));
      return call;
    }
    this.hold(entry);
    call.log.info({ waCallId: entry.waCallId, to: call.info.to }, 'WhatsApp business-initiated call placed');
    endIfUnanswered(call);
    return call;
  }

  private async onAnswer(a: ActiveCall, sdp: string): Promise<void> {
    if (a.direction !== 'outbound' || !a.prepared) {
      a.call.log.debug('SDP answer for a call we did not place: ignored');
      return;
    }
    try {
      await a.leg.acceptAnswer(sdp);
      a.call.log.info('WhatsApp user answered; connecting media');
      if (!(await waitMedia(a, this.mediaTimeoutMs)) || a.call.ended) return;
      a.prepared.answered();
    } catch (err) {
      await failCall(a.call, err);
    }
  }
}
