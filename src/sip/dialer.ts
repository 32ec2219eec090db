import { randomUUID } from 'node:crypto';
import type { GatewayConfig, TrunkConfig } from '../config/schema.js';
import type { Call } from '../core/call.js';
import { admitCall, slotKeys } from '../core/cluster-state.js';
import type { Connected } from '../core/connector.js';
import { GatewayError } from '../core/errors.js';
import type { LegDialer, OutboundLegRequest } from '../core/leg-dialer.js';
import type { SipLadder } from './ladder.js';
import type { Logger } from '../core/logger.js';
import type { HangupReason } from '../core/media-leg.js';
import type { GatewayContext, OutboundRequest } from '../gateway.js';
import type { ModifyRequest, SipDialog } from './engine.js';
import { referTarget, safeExtraHeaders, safeIdentity } from './header-values.js';
import { parseUri } from './message.js';
import type { RtpPortPool, RtpPorts } from './rtp.js';
import { AddressSet } from './media-source.js';
import { DialOutLeg } from './dial-out-leg.js';
import type { InviteOptions } from './uac.js';
import { RtpLeg, type RtpLegOptions } from './rtp-leg.js';
import type { DigestClientCredentials } from './digest-client.js';
import { formatNumber, outboundIdentity } from './identity.js';
import {
  answerDirection,
  answerShape,
  buildAnswer,
  buildAudioSdp,
  formatOf,
  readOffer,
  type AnswerParams,
  type G711,
} from './sdp.js';
import { negotiateAsUas, SessionTimer, termsFromUacResponse } from './session-timer.js';

const STATIC_PT: Record<G711, number> = { PCMU: 0, PCMA: 8 };
const DTMF_PT = 101;
/** How long an API-placed call may ring before we CANCEL it. */
const OUTBOUND_RING_MS = 60_000;

export interface OfferParams {
  address: string;
  port: number;
  sessionId: number;
  codecs: readonly G711[];
  telephoneEvent: boolean;
}

/** Our SDP offer for an outbound leg: the G.711 laws in preference order, plus telephone-event. */
export function buildOffer(p: OfferParams): string {
  return buildAudioSdp({
    address: p.address,
    port: p.port,
    sessionId: p.sessionId,
    version: 1,
    codecs: p.codecs.map((c) => ({ codec: c, payloadType: STATIC_PT[c] })),
    dtmfPayloadType: p.telephoneEvent ? DTMF_PT : undefined,
    direction: 'sendrecv',
  });
}

/**
 * RFC 3326 Reason for a CANCEL sent because the call ended while the far end rang: Q.850 41
 * (temporary failure) when the AI or the gateway failed, so a carrier's CDR tells it from an
 * ordinary hang-up (16, normal clearing).
 */
export function cancelReason(reason: HangupReason): string {
  const code = reason.by === 'ai' || reason.by === 'error' ? 41 : 16;
  return `Q.850;cause=${code};text="${reason.cause.replace(/[^\w.-]/g, '')}"`;
}

/** An RtpLeg whose far end is a SIP dialog we opened: its BYE is reported as the leg's hangup. */
export class DialedRtpLeg extends RtpLeg {
  constructor(
    opts: RtpLegOptions,
    readonly dialog: SipDialog,
  ) {
    super(opts);
  }

  /** The far end hung up (BYE), or the dialog died (session expired): the call ends with this reason. */
  farEndLeft(reason: HangupReason): void {
    this.emit('hangup', reason);
  }
}

/**
 * The request URI for calling `to` over a trunk: its dialUri, else its registrar (registration
 * trunks: the carrier's proxy; no port → RFC 3263 SRV), else its first allowed address. The number
 * is written in the trunk's format.
 */
export function trunkTarget(trunk: TrunkConfig, to: string): string {
  const user = formatNumber(to, trunk).replace(/[^\d+*#]/g, '');
  if (trunk.dialUri) {
    const m = /^(sips?):(.*)$/i.exec(trunk.dialUri)!;
    return `${m[1]!.toLowerCase()}:${user}@${m[2]!}`;
  }
  if (trunk.register) {
    const r = trunk.register.registrar;
    const m = /^(sips?):(.*)$/i.exec(r);
    const rest = m ? m[2]! : r;
    const params =
      trunk.register.transport !== 'udp' && !/;transport=/i.test(rest) ? `;transport=${trunk.register.transport}` : '';
    return `${m ? m[1]!.toLowerCase() : 'sip'}:${user}@${rest}${params}`;
  }
  const host = trunk.allow[0]!.split('/')[0]!;
  return `sip:${user}@${host.includes(':') ? `[${host}]` : host}`;
}

/** What the dialer needs from an engine (embedded or drachtio): an INVITE answered with a dialog and SDP. */
export interface OutboundInviter {
  /** Our address for SDP/identity, when the engine knows it better than the config (learnt via a registrar). */
  readonly publicAddress?: string;
  /** `headers`: the 2xx's, where the engine exposes them (RFC 4028 terms are read from them). */
  invite(
    opts: InviteOptions,
  ): Promise<{ dialog: SipDialog; sdp: string; headers?: { get(name: string): string | undefined } }>;
}

interface DialedLeg {
  leg: DialedRtpLeg;
  dialog: SipDialog;
  sipCallId: string;
}

/**
 * Outbound SIP legs on either engine: an RTP port pair, our G.711 offer, the INVITE (with
 * CANCEL when the call ends while it rings), and on 2xx an RtpLeg wired to the dialog — their BYE is
 * the leg's hangup, the leg's close (the gateway ending the call) is our BYE. Used as ctx.legDialer
 * (OpenAI SIP route) and for POST /v1/calls with front `sip`.
 */
export class SipDialer implements LegDialer {
  private readonly legs = new Set<DialedRtpLeg>();
  private pending = 0;

  constructor(
    private readonly engine: OutboundInviter,
    private readonly ports: RtpPortPool,
    private readonly config: GatewayConfig['sip'],
    private readonly log: Logger,
    /** Where the INVITE's messages are kept per call (the console's SIP ladder). */
    private readonly ladder?: SipLadder,
  ) {}

  get publicAddress(): string {
    return this.engine.publicAddress ?? this.config.publicAddress ?? '127.0.0.1';
  }

  /** Legs up or being dialled (tests check that everything is released). */
  get activeCount(): number {
    return this.legs.size + this.pending;
  }

  async dial(req: OutboundLegRequest): Promise<DialedRtpLeg> {
    return (await this.dialLeg(req, true)).leg;
  }

  /**
   * `mediaAllow`: a trunk's media CIDRs; without one only the answer's SDP address may send media.
   * `ports`: already bound for this leg (a dial-out's leg exists before its INVITE); else bound here.
   */
  async dialLeg(
    req: OutboundLegRequest,
    telephoneEvent: boolean,
    mediaAllow?: AddressSet,
    credentials?: DigestClientCredentials,
    ports?: RtpPorts,
  ): Promise<DialedLeg> {
    this.pending++;
    try {
      return await this.place(req, telephoneEvent, mediaAllow, credentials, ports);
    } finally {
      this.pending--;
    }
  }

  private async place(
    req: OutboundLegRequest,
    telephoneEvent: boolean,
    mediaAllow: AddressSet | undefined,
    credentials: DigestClientCredentials | undefined,
    bound: RtpPorts | undefined,
  ): Promise<DialedLeg> {
    const { call } = req;
    if (call.ended) throw new GatewayError('leg_closed', 'call ended before dialing', call.id);
    const ports = bound ?? (await this.ports.allocate(call.id));
    const abort = new AbortController();
    // The call ending while this rings cancels the INVITE.
    call.onEnd(() => abort.abort());
    const offer = buildOffer({
      address: this.publicAddress,
      port: ports.port,
      sessionId: Math.floor(Math.random() * 1e9),
      codecs: req.codecs,
      telephoneEvent,
    });
    const from = safeIdentity(req.from);
    const extra = safeExtraHeaders(req.headers);
    if (from !== req.from || extra.dropped.length)
      call.log.warn(
        { from: req.from.slice(0, 80), dropped: extra.dropped },
        'caller identity not valid for SIP: sent as anonymous / header dropped',
      );
    let result;
    try {
      result = await this.engine.invite({
        uri: req.uri,
        from,
        headers: extra.headers,
        sdp: offer,
        timeoutMs: req.timeoutMs,
        signal: abort.signal,
        cancelReason: () => call.endReason && cancelReason(call.endReason),
        callId: call.id,
        credentials,
        onProvisional: (status) => call.log.info({ status, uri: req.uri }, 'outbound leg ringing'),
      });
    } catch (err) {
      await ports.release();
      call.log.warn({ uri: req.uri, err: (err as Error).message }, 'outbound SIP leg failed');
      throw err;
    }
    const { dialog } = result;
    // The leg's SIP messages (INVITE, challenge, 1xx, 200, ACK so far, BYE later) join the call's ladder.
    this.ladder?.claim(dialog.callId, call);
    const answer = readOffer(result.sdp, req.codecs, telephoneEvent);
    if (!answer.ok) {
      await ports.release();
      void dialog.bye('bad_sdp_answer');
      throw new GatewayError('upstream', `unusable SDP answer from ${req.uri}: ${answer.reason}`, call.id);
    }
    if (call.ended) {
      await ports.release();
      void dialog.bye(call.endReason?.cause ?? 'call_ended');
      throw new GatewayError('leg_closed', 'call ended while the outbound leg was answered', call.id);
    }
    const direction = answerDirection(answer.offer.direction);
    const ours: AnswerParams = {
      address: this.publicAddress,
      port: ports.port,
      sessionId: Math.floor(Math.random() * 1e9),
      version: 2,
      codec: answer.offer.codec,
      payloadType: answer.offer.payloadType,
      dtmfPayloadType: answer.offer.dtmfPayloadType,
      direction,
    };
    const leg = new DialedRtpLeg(
      {
        callId: call.id,
        log: call.log,
        ports,
        offer: answer.offer,
        direction,
        timeoutMs: this.config.rtpTimeoutSec * 1000,
        mediaAllow,
        onClose: (reason) => {
          this.legs.delete(leg);
          timer?.stop();
          // The far end's BYE is already answered; otherwise ours goes out now and finishes in the
          // background (an unresponsive far end must not hold the call's teardown).
          if (reason.by !== 'remote') call.settleAfterEnd(dialog.bye(reason.cause));
          return Promise.resolve();
        },
      },
      dialog,
    );
    this.legs.add(leg);
    // RFC 4028 §7.2: the 2xx's Session-Expires says who refreshes; a far end that made us the
    // refresher hangs up at expiry unless we refresh.
    const terms = result.headers ? termsFromUacResponse((n) => result.headers!.get(n)) : undefined;
    const refresh = dialog.refresh?.bind(dialog);
    const timer = terms
      ? new SessionTimer(terms, {
          log: call.log,
          refresh: refresh && ((interval) => refresh(interval, { sdp: buildAnswer(ours) })),
          expired: (detail) => leg.farEndLeft({ by: 'timeout', cause: 'session_expired', detail }),
        })
      : undefined;
    if (terms) call.log.info({ intervalSec: terms.interval, weRefresh: terms.weRefresh }, 'outbound leg session timer');
    dialog.on('bye', (reason) => {
      call.log.info({ uri: req.uri, reason }, 'outbound leg: far end sent BYE');
      leg.farEndLeft(reason ?? { by: 'remote', cause: 'bye' });
    });
    dialog.on('modify', (m) => this.onModify(leg, m, ours, call, timer));
    call.log.info(
      { uri: req.uri, sipCallId: dialog.callId, codec: answer.offer.codec, remote: leg.remoteAddress },
      'outbound SIP leg answered',
    );
    return { leg, dialog, sipCallId: dialog.callId };
  }

  /** Their re-INVITE/UPDATE (hold, new address, refresh): follow it and answer with our current SDP. */
  private onModify(
    leg: DialedRtpLeg,
    req: ModifyRequest,
    ours: AnswerParams,
    call: Call,
    timer: SessionTimer | undefined,
  ): void {
    // Their refresh renegotiates the session timer (RFC 4028 §9); our 2xx repeats the terms.
    const neg = req.header
      ? negotiateAsUas((n) => req.header!(n), {
          minSec: this.config.minSessionExpiresSec,
          canRefresh: !!leg.dialog.refresh,
          current: timer?.current,
        })
      : undefined;
    if (neg && 'tooSmall' in neg)
      return req.respond({
        status: 422,
        reason: 'Session Interval Too Small',
        headers: { 'min-se': String(neg.minSe) },
      });
    if (req.sdp) {
      const offered = readOffer(req.sdp, [ours.codec], ours.dtmfPayloadType !== undefined);
      if (!offered.ok) return req.respond({ status: offered.status, reason: offered.reason });
      ours.direction = answerDirection(offered.offer.direction);
      Object.assign(ours, answerShape(offered.offer));
      leg.update(offered.offer, ours.direction);
      ours.version++;
      call.log.info({ direction: ours.direction }, 'outbound leg re-INVITE answered');
    }
    const headers = neg?.headers ?? {};
    if (!req.sdp && req.method === 'UPDATE')
      req.respond({ headers }); // RFC 3311: no offer, no answer
    else
      req.respond({
        sdp: buildAnswer(ours),
        headers,
        // A body-less re-INVITE: our SDP is an offer and their answer comes in the ACK.
        onAck: req.sdp
          ? undefined
          : (sdp) => {
              const got = sdp ? readOffer(sdp, [ours.codec], ours.dtmfPayloadType !== undefined) : undefined;
              if (got?.ok) leg.update(got.offer, answerDirection(got.offer.direction));
              else call.log.warn('outbound leg: re-INVITE ACK without a usable answer; media unchanged');
            },
      });
    timer?.restart(neg?.terms);
  }

  /**
   * POST /v1/calls {front:'sip'}: INVITE `to` over the trunk (its dialUri, else its first allowed
   * address), the AI first. Resolves with the ringing call once the AI is ready and the INVITE is
   * on its way; the callee's answer starts the AI's first turn; a refusal or no answer ends the
   * call with the reason. When the AI cannot be reached the callee is never dialled and this
   * rejects (API: 502 `ai_connect_failed`) — see prepareAi.
   */
  async placeCall(ctx: GatewayContext, req: OutboundRequest): Promise<Call> {
    const trunks = ctx.config.trunks;
    const trunk = req.trunk ? trunks.find((t) => t.name === req.trunk) : trunks[0];
    if (!trunk) throw new GatewayError('not_found', req.trunk ? `no trunk "${req.trunk}"` : 'no SIP trunk configured');
    if (req.route && !ctx.router.routeConfig(req.route))
      throw new GatewayError('not_found', `route "${req.route}" is not configured`);
    const uri = trunkTarget(trunk, req.to);
    if (!parseUri(uri)) throw new GatewayError('config_invalid', `cannot build a SIP URI for ${req.to}: ${uri}`);
    // The trunk's maxCalls is the cluster's limit (cluster state; in-process by default).
    const callId = randomUUID();
    const admission = await admitCall(ctx.cluster, callId, [{ key: slotKeys.trunk(trunk.name), max: trunk.maxCalls }]);
    if (!admission.ok)
      throw new GatewayError(
        'limit_reached',
        'full' in admission
          ? `trunk ${trunk.name} is at its limit of ${trunk.maxCalls} calls`
          : `cluster state unavailable: ${admission.unavailable}`,
      );
    const from = req.from ?? 'gateway';
    const call = ctx.registry.create(
      { front: 'sip', from, to: req.to, trunk: trunk.name, direction: 'outbound' },
      callId,
    );
    call.log.info({ uri, trunk: trunk.name }, 'placing outbound SIP call: opening the AI first');
    const ready = await this.prepareAi(ctx, call, trunk, req.route);
    void this.ringOut(call, trunk, uri, ready);
    return call;
  }

  /**
   * The AI is opened and configured before the callee's phone rings, so their "hello?" is answered
   * by a greeting, never by silence. It is done before the INVITE rather than beside it: a callee
   * who answers faster than the AI connects would hear dead air, and an AI that refuses (401, 429,
   * quota) after the INVITE left would leave a phone that rang for nothing (a missed call the
   * customer may call back). The cost is the AI's connect time added to post-dial delay, which no
   * one hears. Unreachable within the route's connectTimeoutMs: the call ends `ai_connect_failed`
   * without being dialled and the API answers 502 with the reason and the call id, whatever the
   * route's onAiUnavailable (an apology is for people who called us, not a reason to ring someone).
   */
  private async prepareAi(
    ctx: GatewayContext,
    call: Call,
    trunk: TrunkConfig,
    route: string | undefined,
  ): Promise<AiReady> {
    let ports: RtpPorts;
    try {
      ports = await this.ports.allocate(call.id);
    } catch (err) {
      await call.end({ by: 'gateway', cause: 'no_rtp_ports', detail: (err as Error).message });
      throw new GatewayError('limit_reached', `no RTP ports for the call: ${(err as Error).message}`, call.id);
    }
    // The leg's format is our first codec: the AI and bridge are set up for it before the answer.
    const leg = new DialOutLeg(call.id, formatOf(trunk.codecs[0]!), ports);
    let connected: Connected;
    try {
      connected = await ctx.connector.prepare(call, leg, route, { noApology: true });
    } catch (err) {
      // The connector has ended the call (ai_connect_failed), unless it failed before taking the leg.
      const why = (err as Error).message.replace(/^\[call [^\]]*\] /, '');
      if (!call.ended) await call.end({ by: 'error', cause: 'connect_failed', detail: why });
      await leg.close(call.endReason ?? { by: 'error', cause: 'connect_failed' });
      call.log.warn({ err: why }, 'AI unavailable: the callee is not dialled');
      const code = err instanceof GatewayError ? err.code : 'ai_connect_failed';
      throw new GatewayError(code, `AI unavailable, the callee was not dialled: ${why}`, call.id, {
        cause: err,
        details: { callId: call.id },
      });
    }
    if (call.ended) throw new GatewayError('invalid_state', 'call ended before it was placed', call.id);
    call.log.info('AI ready: dialling the callee');
    return { leg, connected, ports };
  }

  /** The INVITE, with the AI already waiting: on the 2xx the leg is wired and the AI greets. */
  private async ringOut(call: Call, trunk: TrunkConfig, uri: string, ready: AiReady): Promise<void> {
    let dialed: DialedLeg;
    try {
      const id = outboundIdentity(trunk, call.info.from, this.publicAddress);
      dialed = await this.dialLeg(
        {
          call,
          uri,
          from: id.from,
          to: `<${uri}>`,
          headers: id.headers,
          codecs: trunk.codecs,
          timeoutMs: OUTBOUND_RING_MS,
        },
        trunk.telephoneEvent,
        new AddressSet(trunk.mediaAllow ?? trunk.allow),
        id.credentials,
        ready.ports,
      );
    } catch (err) {
      if (call.ended) return;
      const e = err as GatewayError;
      const status = (e.details?.status as number | undefined) ?? undefined;
      await call.end(
        e.code === 'timeout'
          ? { by: 'timeout', cause: 'no_answer', detail: e.message }
          : status !== undefined
            ? { by: 'remote', cause: 'rejected', detail: e.message }
            : { by: 'error', cause: 'dial_failed', detail: e.message },
      );
      return;
    }
    const { leg, dialog, sipCallId } = dialed;
    ready.leg.attach(leg);
    if (leg.format.codec !== ready.leg.format.codec)
      call.log.info(
        { wire: leg.format.codec, ai: ready.leg.format.codec },
        'callee chose our second codec: converting',
      );
    call.info.externalId = sipCallId;
    call.transfer = async (destination) => {
      const target = referTarget(destination, (n) => trunkTarget(trunk, n), call.id);
      call.log.info({ target }, 'transferring outbound call (REFER)');
      await dialog.refer(target);
    };
    ready.connected.answered(); // the callee can hear us: the AI greets (route firstTurn)
  }
}

/** A dial-out whose AI is ready: the leg it is bridged to, and the RTP ports our offer names. */
interface AiReady {
  leg: DialOutLeg;
  connected: Connected;
  ports: RtpPorts;
}
