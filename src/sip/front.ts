import { randomUUID } from 'node:crypto';
import { admitCall, slotKeys } from '../core/cluster-state.js';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { HangupReason } from '../core/media-leg.js';
import type { Front, GatewayContext, TrunkView } from '../gateway.js';
import { BrowserCalls } from './browser-calls.js';
import { DigestAuthenticator } from './digest.js';
import { DrachtioEngine } from './drachtio/engine.js';
import { EmbeddedSipEngine } from './embedded.js';
import { createEngine } from './engine-factory.js';
import { SipDialer } from './dialer.js';
import { referTarget } from './header-values.js';
import type { IncomingInvite, SipDialog, SipEngine } from './engine.js';
import { answerModify, applyAnswer, startSessionTimer, type MidDialogOptions, type SipCall } from './mid-dialog.js';
import { SipLadder } from './ladder.js';
import { AddressSet } from './media-source.js';
import { SipPartyDialer } from './party-dialer.js';
import { TrunkRegistrations } from './registrations.js';
import { RtpPortPool } from './rtp.js';
import { RtpLeg } from './rtp-leg.js';
import {
  answerDirection,
  answerShape,
  buildAnswer,
  readOffer,
  type AnswerParams,
  type AudioOffer,
  type OfferResult,
} from './sdp.js';
import { negotiateAsUas } from './session-timer.js';
import { toE164, userOf } from './trunks.js';
import { trunkResolver, type TrunkResolver } from './trunk-identity.js';
import type { WebRtcMediaFactory } from './webrtc-media.js';

export { createEngine } from './engine-factory.js';

export interface SipFrontOptions {
  engine?: SipEngine;
  /** WebRTC legs for browser phones (SIP over WebSocket, config `browser`); absent: no browser calls. */
  webrtc?: WebRtcMediaFactory;
  /** Digest nonce lifetime (tests shorten it). */
  nonceTtlMs?: number;
}

/** Per-call SIP state the front keeps until the call ends. */

/**
 * A delayed offer (INVITE without SDP): until the ACK brings the carrier's answer the leg has no
 * remote address and neither sends nor expects media.
 */
const NO_MEDIA_YET: AudioOffer = {
  address: '0.0.0.0',
  port: 9,
  rtcpPort: 10,
  codec: 'PCMA',
  payloadType: 8,
  dtmfPayloadType: undefined,
  direction: 'inactive',
};

/**
 * Carrier SIP trunk front: INVITEs from known trunks become calls bridged to the AI. Policy lives
 * here (trunk match, digest auth, codec choice, number normalisation, call limits, hold, transfer);
 * the SIP stack is whichever SipEngine the config picks.
 */
export class SipFront implements Front {
  readonly name = 'sip';
  readonly engine: SipEngine;
  readonly ports: RtpPortPool;
  private readonly trunks: TrunkResolver;
  private readonly digest: DigestAuthenticator;
  private readonly log: Logger;
  private readonly calls = new Map<string, SipCall>();
  private draining = false;
  /** Every SIP message per call, for the console's ladder (embedded engine). */
  readonly ladder = new SipLadder();
  /** Browser phone calls over SIP-over-WebSocket (embedded engine with `browser.enabled`). */
  private readonly browser: BrowserCalls | undefined;
  /** Outbound legs and calls; set once the engine is started. */
  dialer: SipDialer | undefined;
  /** Registration trunks (embedded engine only); set once the engine is listening. */
  registrations: TrunkRegistrations | undefined;
  private unregistering: Promise<void> | undefined;

  constructor(
    private readonly ctx: GatewayContext,
    opts: SipFrontOptions = {},
  ) {
    const sip = ctx.config.sip;
    this.log = ctx.log.child({ front: 'sip' });
    this.engine =
      opts.engine ?? createEngine(ctx, (a) => this.registrations?.isRegistrarSource(a) ?? false, this.ladder);
    this.trunks = trunkResolver(ctx.config, this.log, () => this.registrations);
    this.digest = new DigestAuthenticator(opts.nonceTtlMs);
    const rtpHost = sip.host === '0.0.0.0' || sip.host === '::' ? '0.0.0.0' : sip.host;
    // IPv6 media (IN IP6 offers) only when an IPv6 address for our SDP is configured.
    const rtpHost6 = sip.publicAddress6 ? (sip.host.includes(':') ? sip.host : '::') : undefined;
    this.ports = new RtpPortPool(rtpHost, sip.rtpPortMin, sip.rtpPortMax, rtpHost6);
    const engine = this.engine;
    if (ctx.config.browser.enabled && opts.webrtc && engine instanceof EmbeddedSipEngine) {
      this.browser = new BrowserCalls(ctx, opts.webrtc, this.digest, () => this.draining || ctx.draining);
      ctx.upgrades.set('/sip', (req, socket, head) => engine.transports.handleUpgrade(req, socket, head));
    }
  }

  /** What mid-dialog handling needs from the front (src/sip/mid-dialog.ts). */
  private get midDialog(): MidDialogOptions {
    return { engine: this.engine, minSessionExpiresSec: this.ctx.config.sip.minSessionExpiresSec };
  }

  async start(): Promise<void> {
    this.engine.on('invite', (inv) => {
      this.onInvite(inv).catch((err: unknown) => {
        this.log.error({ err: (err as Error).message, sipCallId: inv.callId }, 'INVITE handling failed');
        inv.reject(500, 'Server Internal Error');
      });
    });
    this.engine.on('error', (err) => this.log.error({ err: err.message }, 'SIP engine error'));
    await this.engine.start();
    this.startRegistrations();
    this.ctx.trunks = () => this.trunkViews();
    const inviter =
      this.engine instanceof EmbeddedSipEngine || this.engine instanceof DrachtioEngine ? this.engine : undefined;
    if (inviter) {
      const dialer = new SipDialer(inviter, this.ports, this.ctx.config.sip, this.log, this.ladder);
      this.dialer = dialer;
      this.ctx.legDialer = dialer;
      this.ctx.partyDialers.set('sip', new SipPartyDialer(dialer, this.ctx.config.trunks, this.ctx.cluster));
      this.ctx.dialers.set('sip', (req) => {
        if (this.draining || this.ctx.draining) throw new GatewayError('limit_reached', 'draining: no new calls');
        return dialer.placeCall(this.ctx, req);
      });
    }
  }

  drain(): void {
    this.draining = true;
    // OPTIONS now answer 503: Kamailio's dispatcher probing stops sending us new calls.
    this.engine.drain?.();
    // Un-REGISTER now: the carrier stops sending new calls while the ones in progress finish.
    this.unregistering ??= this.registrations?.stop();
  }

  private startRegistrations(): void {
    const trunks = this.ctx.config.trunks;
    const { metrics } = this.ctx;
    if (!trunks.some((t) => t.register)) return;
    if (!(this.engine instanceof EmbeddedSipEngine)) {
      throw new GatewayError(
        'config_invalid',
        'trunks[].register needs sip.engine embedded (drachtio registers itself)',
      );
    }
    const regs = new TrunkRegistrations(this.engine, trunks, this.log, {
      onStateChange: (s) => metrics.registrationUp.set({ trunk: s.trunk }, s.state === 'registered' ? 1 : 0),
      onFailure: (trunk, status) => metrics.registrationFailures.inc({ trunk, code: String(status) }),
    });
    this.registrations = regs;
    for (const t of trunks) if (t.register) metrics.registrationUp.set({ trunk: t.name }, 0);
    regs.start();
  }

  /** Each trunk as ops see it (GET /v1/trunks, /readyz details, dashboard). */
  trunkViews(): TrunkView[] {
    return this.ctx.config.trunks.map((t) => ({
      name: t.name,
      kind: t.register ? 'registration' : 'ip',
      match: t.match ?? (t.register ? 'both' : 'ip'),
      allow: t.allow,
      activeCalls: this.ctx.registry.countActive((c) => c.info.front === 'sip' && c.info.trunk === t.name),
      maxCalls: t.maxCalls,
      registration: this.registrations?.status(t.name),
    }));
  }

  async stop(): Promise<void> {
    this.unregistering ??= this.registrations?.stop();
    await this.unregistering;
    await Promise.all([...this.calls.values()].map((c) => c.call.end({ by: 'gateway', cause: 'shutdown' })));
    if (this.dialer) {
      if (this.ctx.legDialer === this.dialer) this.ctx.legDialer = undefined;
      this.ctx.dialers.delete('sip');
      this.ctx.partyDialers.delete('sip');
      this.dialer = undefined;
    }
    await this.engine.stop();
  }

  describe(): Record<string, unknown> {
    const sip = this.ctx.config.sip;
    return {
      ...this.engine.describe(),
      rtp: `${sip.rtpPortMin}-${sip.rtpPortMax}`,
      trunks: this.ctx.config.trunks.map((t) => t.name),
    };
  }

  ready(): boolean {
    return this.engine.ready();
  }

  /** The address for our SDP: configured, or learnt by the engine from a registrar. */
  private get advertisedAddress(): string {
    if (this.engine instanceof EmbeddedSipEngine) return this.engine.publicAddress;
    return this.ctx.config.sip.publicAddress ?? '127.0.0.1';
  }

  get activeCount(): number {
    return this.calls.size;
  }

  /** The RTP leg of a live call by SIP Call-ID (tests, diagnostics). */
  legFor(sipCallId: string): RtpLeg | undefined {
    for (const c of this.calls.values()) if (c.invite.callId === sipCallId) return c.leg;
    return undefined;
  }

  private async onInvite(inv: IncomingInvite): Promise<void> {
    const src = `${inv.source.address}:${inv.source.port}`;
    const log = this.log.child({ sipCallId: inv.callId, src });
    if (inv.source.transport === 'ws' || inv.source.transport === 'wss') {
      if (this.browser) return this.browser.onInvite(inv, (call) => this.ladder.claim(inv.callId, call));
      return inv.reject(403, 'Forbidden (browser calls are off)');
    }
    if (this.draining || this.ctx.draining) {
      log.info('INVITE while draining: 503');
      return inv.reject(503, 'Service Unavailable (shutting down)', { 'retry-after': '60' });
    }
    const found = this.trunks.resolve(inv, log); // logs its refusals
    if (!found.ok) return inv.reject(403, found.reason);
    const trunk = found.trunk;
    if (trunk.auth) {
      const auth = inv.header('authorization') ?? inv.header('proxy-authorization');
      const r = this.digest.verify(auth, 'INVITE', trunk.auth, inv.requestUri);
      if (!r.ok) {
        if (r.why === 'uri_mismatch') {
          log.warn({ trunk: trunk.name }, 'digest uri is not the Request-URI: 400');
          return inv.reject(400, 'Bad Request (digest uri does not match the Request-URI)');
        }
        // A replayed nc: the credentials were right once, so a fresh nonce (stale) lets a real
        // client retry at once while the replay gets nothing.
        const stale = r.why === 'stale' || r.why === 'replay';
        (r.why === 'missing' || r.why === 'stale' ? log.info : log.warn).call(
          log,
          { trunk: trunk.name, why: r.why },
          'digest challenge: 401',
        );
        return inv.reject(401, 'Unauthorized', {
          'www-authenticate': this.digest.challenge(trunk.auth.realm, stale),
        });
      }
    }
    // Delayed offer (RFC 3261 §13.3.1): we offer the trunk's preferred codec in the 200; the answer comes in the ACK.
    const families: (4 | 6)[] = this.ctx.config.sip.publicAddress6 ? [4, 6] : [4];
    const offered: OfferResult = inv.sdp
      ? readOffer(inv.sdp, trunk.codecs, trunk.telephoneEvent, families)
      : {
          ok: true,
          offer: {
            ...NO_MEDIA_YET,
            codec: trunk.codecs[0]!,
            payloadType: trunk.codecs[0] === 'PCMU' ? 0 : 8,
            dtmfPayloadType: trunk.telephoneEvent ? 101 : undefined,
          },
        };
    if (!offered.ok) {
      log.warn({ trunk: trunk.name, status: offered.status, reason: offered.reason }, 'SDP offer refused');
      return inv.reject(offered.status, offered.reason);
    }
    // The front negotiates the timer on every engine (drachtio-server acts on the Session-Expires we
    // put in the 2xx); an engine whose SIP stack runs RFC 4028 itself refreshes on our behalf.
    const engineTimers = this.engine.sessionTimers === 'engine';
    const timer = negotiateAsUas((n) => inv.header(n), {
      minSec: this.ctx.config.sip.minSessionExpiresSec,
      canRefresh: this.engine.canRefresh || engineTimers,
    });
    if (timer && 'tooSmall' in timer)
      return inv.reject(422, 'Session Interval Too Small', { 'min-se': String(timer.minSe) });

    const to = toE164(userOf(inv.requestUri) || userOf(inv.to), trunk);
    const from = toE164(userOf(inv.from), trunk);
    // `maxCalls` is the cluster's limit: the slot is taken in cluster state (in-process by default).
    const callId = randomUUID();
    const admission = await admitCall(this.ctx.cluster, callId, [
      { key: slotKeys.trunk(trunk.name), max: trunk.maxCalls },
    ]);
    if (!admission.ok) {
      if ('full' in admission) {
        log.warn({ trunk: trunk.name, max: trunk.maxCalls }, 'trunk call limit reached: 503');
        return inv.reject(503, 'Service Unavailable (trunk call limit)', { 'retry-after': '5' });
      }
      log.error({ trunk: trunk.name, err: admission.unavailable }, 'cluster state unavailable: 503');
      return inv.reject(503, 'Service Unavailable (cluster state unavailable)', { 'retry-after': '5' });
    }
    if (inv.cancelled) {
      await this.ctx.cluster.release(callId).catch(() => {});
      return;
    }
    const call = this.ctx.registry.create(
      {
        front: 'sip',
        from,
        to,
        trunk: trunk.name,
        direction: 'inbound',
        externalId: inv.callId,
      },
      callId,
    );
    this.ladder.claim(inv.callId, call);
    call.log.info(
      {
        sipCallId: inv.callId,
        src,
        trunkFrom: found.via,
        codec: offered.offer.codec,
        delayedOffer: !inv.sdp,
        rawFrom: inv.from,
        rawTo: inv.requestUri,
      },
      'SIP INVITE accepted',
    );

    // Listen for CANCEL from the first moment: it can arrive during any await below.
    inv.on('cancel', () => {
      call.log.info('CANCEL before answer');
      void call.end({ by: 'remote', cause: 'cancel' });
    });
    inv.on('failed', (why) => {
      call.log.warn({ why }, 'INVITE abandoned by the SIP engine');
      void call.end({ by: 'timeout', cause: 'prack_timeout', detail: why });
    });

    let ports;
    try {
      ports = await this.ports.allocate(call.id, offered.offer.family);
    } catch (err) {
      call.log.error({ err: (err as Error).message }, 'no RTP ports: 503');
      inv.reject(503, 'Service Unavailable (no media ports)');
      await call.end({ by: 'gateway', cause: 'no_rtp_ports' });
      return;
    }
    if (call.ended) {
      // CANCELled while the ports were being bound: no leg (and none of its timers) ever starts.
      await ports.release();
      return;
    }
    const offer = offered.offer;
    const answer: AnswerParams = {
      address: (offer.family === 6 && this.ctx.config.sip.publicAddress6) || this.advertisedAddress,
      port: ports.port,
      sessionId: Math.floor(Math.random() * 1e9),
      version: 1,
      codec: offer.codec,
      payloadType: offer.payloadType,
      dtmfPayloadType: offer.dtmfPayloadType,
      // Our offer in a delayed-offer 200 is sendrecv.
      direction: inv.sdp ? answerDirection(offer.direction) : 'sendrecv',
      ...answerShape(offer),
    };
    const state: SipCall = {
      call,
      invite: inv,
      leg: undefined as unknown as RtpLeg,
      trunk,
      answer,
      lastSdp: buildAnswer(answer),
      dialog: undefined,
      established: undefined,
      sessionTimer: undefined,
    };
    state.leg = new RtpLeg({
      callId: call.id,
      log: call.log,
      ports,
      offer,
      direction: inv.sdp ? answer.direction : 'inactive',
      timeoutMs: this.ctx.config.sip.rtpTimeoutSec * 1000,
      mediaAllow: new AddressSet(trunk.mediaAllow ?? trunk.allow),
      onClose: (reason) => this.onLegClosed(state, reason),
    });
    this.calls.set(call.id, state);
    call.onEnd(() => {
      state.sessionTimer?.stop();
      this.calls.delete(call.id);
    });
    inv.progress(180);

    let connected;
    try {
      // The AI is opened and configured while the caller hears ringing; 200 only once it is ready.
      connected = await this.ctx.connector.prepare(call, state.leg);
    } catch (err) {
      // The connector has ended the call; the leg's close answered 503 + Retry-After (onLegClosed).
      call.log.error({ err: (err as Error).message }, 'could not connect the call to its AI route');
      await call.end({ by: 'error', cause: 'connect_failed', detail: (err as Error).message });
      await state.leg.close({ by: 'error', cause: 'connect_failed' }); // if the connector never took the leg
      return;
    }
    if (call.ended) return; // cancelled (487 sent) or ended while the AI connected

    state.dialog = inv.answer(state.lastSdp, timer?.headers ?? {});
    connected.answered(); // the 200 is out: the AI greets (route firstTurn)
    let dialog: SipDialog;
    try {
      dialog = await state.dialog;
    } catch (err) {
      if (!call.ended) {
        call.log.warn({ err: (err as Error).message }, 'call not confirmed by ACK');
        await call.end({ by: 'timeout', cause: 'ack_timeout', detail: (err as Error).message });
      }
      return;
    }
    state.established = dialog;
    call.log.info('ACK received: call established');
    if (call.ended) return void dialog.bye(call.endReason?.cause);
    if (!inv.sdp && !applyAnswer(state, inv.ackSdp, 'ACK')) {
      const why = inv.ackSdp ? 'unusable SDP answer in ACK' : 'no SDP answer in ACK';
      await call.end({ by: 'error', cause: 'bad_sdp_answer', detail: `delayed offer: ${why}` });
      return;
    }
    dialog.on('bye', (reason) => void call.end(reason ?? { by: 'remote', cause: 'bye' }));
    dialog.on('modify', (req) => answerModify(state, dialog, req, this.midDialog));
    call.transfer = (destination) => this.transfer(state, dialog, destination);
    if (this.engine.sessionTimers === 'engine') return; // its SIP stack refreshes and expires sessions
    if (timer) state.sessionTimer = startSessionTimer(state, dialog, timer.terms);
  }

  /** The carrier's answer to an offer of ours (delayed offer: in the ACK); false when there is none we can use. */
  private async transfer(state: SipCall, dialog: SipDialog, destination: string): Promise<void> {
    const host = state.invite.source.address;
    const target = referTarget(
      destination,
      (n) => `sip:${n}@${host.includes(':') ? `[${host}]` : host}`,
      state.call.id,
    );
    state.call.log.info({ target }, 'transferring call (REFER)');
    await dialog.refer(target);
    state.call.log.info({ target }, 'REFER accepted (202); the trunk will end our leg');
  }

  /** Front signalling when the call ends: BYE for an established call, a final response before that. */
  private async onLegClosed(state: SipCall, reason: HangupReason): Promise<void> {
    if (reason.by === 'remote') return; // BYE/CANCEL came from the trunk: already answered
    const { invite } = state;
    if (!state.dialog) {
      // A temporarily unavailable AI: 503 + Retry-After so the carrier can fail over (RFC 3261 §21.5.4).
      if (reason.retryAfterSec !== undefined)
        invite.reject(503, 'Service Unavailable (AI unavailable)', { 'retry-after': String(reason.retryAfterSec) });
      else invite.reject(reason.by === 'timeout' ? 408 : 480, undefined);
      return;
    }
    // The BYE goes out now; its transaction finishes in the background (a dead carrier must not
    // hold call teardown for 32 s).
    if (state.established) return state.call.settleAfterEnd(state.established.bye(reason.cause));
    // Answered but not yet ACKed: BYE once the ACK arrives (without it the engine sends its own BYE).
    state.call.settleAfterEnd(state.dialog.then((d) => d.bye(reason.cause)));
  }
}
