import type { TrunkConfig } from '../config/schema.js';
import type { Call } from '../core/call.js';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { HangupReason } from '../core/media-leg.js';
import type { Front, GatewayContext } from '../gateway.js';
import { DigestAuthenticator } from './digest.js';
import { SipDialer } from './dialer.js';
import { DrachtioEngine } from './drachtio/engine.js';
import { EmbeddedSipEngine } from './embedded.js';
import { referTarget } from './header-values.js';
import type { IncomingInvite, ModifyRequest, SipDialog, SipEngine } from './engine.js';
import { RtpPortPool } from './rtp.js';
import { RtpLeg } from './rtp-leg.js';
import { answerDirection, buildAnswer, readOffer, type AnswerParams } from './sdp.js';
import { toE164, TrunkTable, userOf } from './trunks.js';

/** RFC 4028 §5: we refuse intervals below this with 422. */

export interface SipFrontOptions {
  engine?: SipEngine;
  /** Digest nonce lifetime (tests shorten it). */
  nonceTtlMs?: number;
}

/** Per-call SIP state the front keeps until the call ends. */
interface SipCall {
  call: Call;
  invite: IncomingInvite;
  leg: RtpLeg;
  trunk: TrunkConfig;
  answer: AnswerParams;
  lastSdp: string;
  dialog: Promise<SipDialog> | undefined;
  /** Set once the ACK confirmed the dialog. */
  established: SipDialog | undefined;
  sessionTimer: NodeJS.Timeout | undefined;
}

export function createEngine(ctx: GatewayContext): SipEngine {
  const sip = ctx.config.sip;
  const log = ctx.log.child({ front: 'sip' });
  if (sip.engine === 'drachtio') {
    if (!sip.drachtio) throw new GatewayError('config_invalid', 'sip.engine is drachtio but sip.drachtio is not set');
    return new DrachtioEngine({ ...sip.drachtio, log });
  }
  return new EmbeddedSipEngine({ host: sip.host, port: sip.port, publicAddress: sip.publicAddress, log, tls: sip.tls });
}

/**
 * Carrier SIP trunk front: INVITEs from known trunks become calls bridged to the AI. Policy lives
 * here (trunk match, digest auth, codec choice, number normalisation, call limits, hold, transfer);
 * the SIP stack is whichever SipEngine the config picks.
 */
export class SipFront implements Front {
  readonly name = 'sip';
  readonly engine: SipEngine;
  readonly ports: RtpPortPool;
  private readonly trunks: TrunkTable;
  private readonly digest: DigestAuthenticator;
  private readonly log: Logger;
  private readonly calls = new Map<string, SipCall>();
  private draining = false;
  /** Outbound legs and calls (embedded engine only); set once the engine is listening. */
  dialer: SipDialer | undefined;

  constructor(
    private readonly ctx: GatewayContext,
    opts: SipFrontOptions = {},
  ) {
    const sip = ctx.config.sip;
    this.log = ctx.log.child({ front: 'sip' });
    this.engine = opts.engine ?? createEngine(ctx);
    this.trunks = new TrunkTable(ctx.config.trunks);
    this.digest = new DigestAuthenticator(opts.nonceTtlMs);
    const rtpHost = sip.host === '0.0.0.0' || sip.host === '::' ? '0.0.0.0' : sip.host;
    this.ports = new RtpPortPool(rtpHost, sip.rtpPortMin, sip.rtpPortMax);
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
    if (this.engine instanceof EmbeddedSipEngine) {
      const dialer = new SipDialer(this.engine, this.ports, this.ctx.config.sip, this.log);
      this.dialer = dialer;
      this.ctx.legDialer = dialer;
      this.ctx.dialers.set('sip', (req) => {
        if (this.draining || this.ctx.draining) throw new GatewayError('limit_reached', 'draining: no new calls');
        return dialer.placeCall(this.ctx, req);
      });
    }
  }

  drain(): void {
    this.draining = true;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.calls.values()].map((c) => c.call.end({ by: 'gateway', cause: 'shutdown' })));
    if (this.dialer) {
      if (this.ctx.legDialer === this.dialer) this.ctx.legDialer = undefined;
      this.ctx.dialers.delete('sip');
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
    if (this.draining || this.ctx.draining) {
      log.info('INVITE while draining: 503');
      return inv.reject(503, 'Service Unavailable (shutting down)', { 'retry-after': '60' });
    }
    const trunk = this.trunks.match(inv.source.address);
    if (!trunk) {
      log.warn({ from: inv.from, to: inv.to }, 'INVITE from an address no trunk allows: 403');
      return inv.reject(403, 'Forbidden (unknown source address)');
    }
    if (trunk.auth) {
      const auth = inv.header('authorization') ?? inv.header('proxy-authorization');
      const r = this.digest.verify(auth, 'INVITE', trunk.auth);
      if (!r.ok) {
        (r.why === 'missing' || r.why === 'stale' ? log.info : log.warn).call(
          log,
          { trunk: trunk.name, why: r.why },
          'digest challenge: 401',
        );
        return inv.reject(401, 'Unauthorized', {
          'www-authenticate': this.digest.challenge(trunk.auth.realm, r.why === 'stale'),
        });
      }
    }
    if (!inv.sdp) return inv.reject(488, 'Not Acceptable Here (INVITE without SDP offer)');
    const offered = readOffer(inv.sdp, trunk.codecs, trunk.telephoneEvent);
    if (!offered.ok) {
      log.warn({ trunk: trunk.name, status: offered.status, reason: offered.reason }, 'SDP offer refused');
      return inv.reject(offered.status, offered.reason);
    }
    const active = this.ctx.registry.countActive((c) => c.info.front === 'sip' && c.info.trunk === trunk.name);
    if (active >= trunk.maxCalls) {
      log.warn({ trunk: trunk.name, active, max: trunk.maxCalls }, 'trunk call limit reached: 503');
      return inv.reject(503, 'Service Unavailable (trunk call limit)', { 'retry-after': '5' });
    }
    const timer = this.sessionTimer(inv);
    if (timer && 'reject' in timer)
      return inv.reject(422, 'Session Interval Too Small', {
        'min-se': String(this.ctx.config.sip.minSessionExpiresSec),
      });

    const to = toE164(userOf(inv.requestUri) || userOf(inv.to), trunk);
    const from = toE164(userOf(inv.from), trunk);
    const call = this.ctx.registry.create({
      front: 'sip',
      from,
      to,
      trunk: trunk.name,
      direction: 'inbound',
      externalId: inv.callId,
    });
    call.log.info(
      { sipCallId: inv.callId, src, codec: offered.offer.codec, rawFrom: inv.from, rawTo: inv.requestUri },
      'SIP INVITE accepted',
    );

    // Listen for CANCEL from the first moment: it can arrive during any await below.
    inv.on('cancel', () => {
      call.log.info('CANCEL before answer');
      void call.end({ by: 'remote', cause: 'cancel' });
    });

    let ports;
    try {
      ports = await this.ports.allocate(call.id);
    } catch (err) {
      call.log.error({ err: (err as Error).message }, 'no RTP ports: 503');
      inv.reject(503, 'Service Unavailable (no media ports)');
      await call.end({ by: 'gateway', cause: 'no_rtp_ports' });
      return;
    }
    const offer = offered.offer;
    const answer: AnswerParams = {
      address: this.ctx.config.sip.publicAddress,
      port: ports.port,
      sessionId: Math.floor(Math.random() * 1e9),
      version: 1,
      codec: offer.codec,
      payloadType: offer.payloadType,
      dtmfPayloadType: offer.dtmfPayloadType,
      direction: answerDirection(offer.direction),
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
      direction: answer.direction,
      timeoutMs: this.ctx.config.sip.rtpTimeoutSec * 1000,
      onClose: (reason) => this.onLegClosed(state, reason),
    });
    this.calls.set(call.id, state);
    call.onEnd(() => {
      clearTimeout(state.sessionTimer);
      this.calls.delete(call.id);
    });
    if (call.ended) {
      await ports.release();
      return;
    }
    inv.progress(180);

    try {
      await this.ctx.connector.connect(call, state.leg);
    } catch (err) {
      call.log.error({ err: (err as Error).message }, 'could not connect the call to its AI route');
      inv.reject(503, 'Service Unavailable (AI unavailable)');
      await call.end({ by: 'error', cause: 'connect_failed', detail: (err as Error).message });
      await state.leg.close({ by: 'error', cause: 'connect_failed' }); // if the connector never took the leg
      return;
    }
    if (call.ended) return; // cancelled (487 sent) or ended while the AI connected

    const headers: Record<string, string> = {};
    if (timer) {
      headers['session-expires'] = `${timer.interval};refresher=${timer.refresher}`;
      if (timer.require) headers.require = 'timer';
    }
    state.dialog = inv.answer(state.lastSdp, headers);
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
    dialog.on('bye', () => void call.end({ by: 'remote', cause: 'bye' }));
    dialog.on('modify', (req) => this.onModify(state, req));
    call.transfer = (destination) => this.transfer(state, dialog, destination);
    if (timer?.refresher === 'uas') this.scheduleRefresh(state, dialog, timer.interval);
    else if (timer) this.armSessionTimer(state, timer.interval);
  }

  /**
   * RFC 4028 with us as refresher (the trunk said refresher=uas): refresh at half the interval; a
   * refresh the trunk refuses or never answers means the session is dead, so we end the call (BYE).
   */
  private scheduleRefresh(state: SipCall, dialog: SipDialog, intervalSec: number): void {
    if (!dialog.refresh) {
      state.call.log.warn('this SIP engine cannot refresh sessions; relying on RTP timeout instead');
      return;
    }
    clearTimeout(state.sessionTimer);
    state.sessionTimer = setTimeout(
      () => {
        dialog.refresh!(intervalSec)
          .then(() => {
            state.call.log.debug({ intervalSec }, 'session refreshed (UPDATE)');
            if (!state.call.ended) this.scheduleRefresh(state, dialog, intervalSec);
          })
          .catch((err: unknown) => {
            state.call.log.warn({ err: (err as Error).message }, 'session refresh failed');
            void state.call.end({ by: 'timeout', cause: 'session_expired', detail: (err as Error).message });
          });
      },
      (intervalSec * 1000) / 2,
    );
  }

  /** RFC 4028: echo Session-Expires when the trunk asks; the trunk (uac) refreshes unless it said uas. */
  private sessionTimer(
    inv: IncomingInvite,
  ): { interval: number; refresher: 'uac' | 'uas'; require: boolean } | { reject: true } | undefined {
    const se = inv.header('session-expires');
    if (!se) return undefined;
    const m = /^\s*(\d+)\s*(?:;\s*refresher\s*=\s*(uac|uas))?/i.exec(se);
    if (!m) return undefined;
    const interval = Number(m[1]);
    if (interval < this.ctx.config.sip.minSessionExpiresSec) return { reject: true };
    const supported =
      /\btimer\b/i.test(inv.header('supported') ?? '') || /\btimer\b/i.test(inv.header('require') ?? '');
    const refresher = (m[2]?.toLowerCase() as 'uac' | 'uas' | undefined) ?? 'uac';
    return { interval, refresher, require: supported };
  }

  /** Without a refresh (re-INVITE/UPDATE) within the interval the session is dead (RFC 4028 §10). */
  private armSessionTimer(state: SipCall, intervalSec: number): void {
    clearTimeout(state.sessionTimer);
    state.sessionTimer = setTimeout(() => {
      state.call.log.warn({ intervalSec }, 'session expired without refresh');
      void state.call.end({ by: 'timeout', cause: 'session_expired' });
    }, intervalSec * 1000);
  }

  private onModify(state: SipCall, req: ModifyRequest): void {
    const { call, leg, answer } = state;
    if (!req.sdp) {
      // Session refresh without an offer: our current description stands.
      req.respond({ sdp: state.lastSdp });
    } else {
      const offered = readOffer(req.sdp, [answer.codec], state.trunk.telephoneEvent);
      if (!offered.ok) {
        call.log.warn({ reason: offered.reason }, 're-INVITE offer refused');
        return req.respond({ status: offered.status, reason: offered.reason });
      }
      const dir = answerDirection(offered.offer.direction);
      leg.update(offered.offer, dir);
      const next = { ...answer, direction: dir, dtmfPayloadType: offered.offer.dtmfPayloadType };
      if (buildAnswer({ ...next, version: answer.version }) !== state.lastSdp) next.version = answer.version + 1;
      state.answer = next;
      state.lastSdp = buildAnswer(next);
      call.log.info(
        { offered: offered.offer.direction, answered: dir, sdpVersion: next.version },
        're-INVITE answered',
      );
      req.respond({ sdp: state.lastSdp });
    }
    const se = /^\s*(\d+)\s*(?:;\s*refresher\s*=\s*(uac|uas))?/i.exec(state.invite.header('session-expires') ?? '');
    // A trunk-side refresh restarts the expiry clock; when we are the refresher our own schedule runs.
    if (se && state.sessionTimer && se[2]?.toLowerCase() !== 'uas') this.armSessionTimer(state, Number(se[1]));
  }

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
      invite.reject(reason.by === 'timeout' ? 408 : 480, undefined);
      return;
    }
    // The BYE goes out now; its transaction finishes in the background (a dead carrier must not
    // hold call teardown for 32 s).
    if (state.established) return void state.established.bye(reason.cause);
    // Answered but not yet ACKed: BYE once the ACK arrives (without it the engine sends its own BYE).
    state.dialog.then((d) => d.bye(reason.cause)).catch(() => {});
  }
}
