import type { Call } from '../core/call.js';
import type { Logger } from '../core/logger.js';
import type { HangupReason } from '../core/media-leg.js';
import type { GatewayContext } from '../gateway.js';
import { BrowserListen, listenTarget } from './browser-listen.js';
import type { DigestAuthenticator } from './digest.js';
import type { IncomingInvite, SipDialog } from './engine.js';
import { userOf } from './trunks.js';
import { isWebRtcOffer, type ConnectingLeg, type WebRtcMediaFactory } from './webrtc-media.js';

/** The digest realm browser phones authenticate in; the password is the ops token (api.token). */
export const BROWSER_REALM = 'voice-gateway';
/** The digest username browser phones use (the token is the secret; the name only labels it). */
export const BROWSER_USER = 'ops';

/**
 * Browser phone calls: INVITEs over SIP-over-WebSocket (RFC 7118) from the ops console's sip.js
 * phone. A front of its own (`front: browser`): authenticated with the ops token, limited by
 * `browser.maxCalls`, routed to the route named by the Request-URI user (`sip:<route>@...`; any
 * other user goes through routing rules with front `browser`), and answered with a WebRTC leg.
 *
 * Why digest with the token as password (and not the token in the WebSocket URL): the token never
 * crosses the wire or lands in a URL, access log or browser history; each INVITE proves it against
 * a fresh nonce (replays refused by the engine's nonce tracking); and it is what sip.js speaks.
 */
export class BrowserCalls {
  private readonly log: Logger;
  private readonly listen: BrowserListen;

  constructor(
    private readonly ctx: GatewayContext,
    private readonly media: WebRtcMediaFactory,
    private readonly digest: DigestAuthenticator,
    private readonly isDraining: () => boolean,
  ) {
    this.log = ctx.log.child({ front: 'browser' });
    this.listen = new BrowserListen(ctx, media, this.log);
  }

  /** `claim`: the call now owns the INVITE's Call-ID (its SIP ladder). */
  async onInvite(inv: IncomingInvite, claim: (call: Call) => void): Promise<void> {
    const { config, registry, router } = this.ctx;
    const log = this.log.child({ sipCallId: inv.callId, src: `${inv.source.address}:${inv.source.port}` });
    if (this.isDraining()) return inv.reject(503, 'Service Unavailable (shutting down)', { 'retry-after': '60' });
    const token = config.api.token;
    if (!token) {
      log.warn('browser INVITE but api.token is not set: 403');
      return inv.reject(403, 'Forbidden (set api.token to enable the browser phone)');
    }
    const creds = { realm: BROWSER_REALM, username: BROWSER_USER, password: token };
    const auth = this.digest.verify(inv.header('authorization'), 'INVITE', creds, inv.requestUri);
    if (!auth.ok) {
      if (auth.why === 'uri_mismatch')
        return inv.reject(400, 'Bad Request (digest uri does not match the Request-URI)');
      if (auth.why !== 'missing') log.warn({ why: auth.why }, 'browser digest refused: 401');
      const stale = auth.why === 'stale' || auth.why === 'replay';
      return inv.reject(401, 'Unauthorized', { 'www-authenticate': this.digest.challenge(BROWSER_REALM, stale) });
    }
    if (!inv.sdp || !isWebRtcOffer(inv.sdp)) {
      log.warn('browser INVITE without a WebRTC offer: 488');
      return inv.reject(488, 'Not Acceptable Here (a WebRTC offer: ICE, DTLS-SRTP, Opus)');
    }
    // `sip:listen-<call id>@...`: the operator listens in on a live call (not a call of its own).
    const listenTo = listenTarget(userOf(inv.requestUri));
    if (listenTo) return this.listen.onInvite(inv, listenTo, inv.sdp);
    const active = registry.countActive((c) => c.info.front === 'browser');
    if (active >= config.browser.maxCalls) {
      log.warn({ active, max: config.browser.maxCalls }, 'browser call limit reached: 486');
      return inv.reject(486, 'Busy Here (browser call limit)');
    }
    const wanted = userOf(inv.requestUri);
    const named = wanted && router.routeConfig(wanted) ? wanted : undefined;
    const call = registry.create({
      front: 'browser',
      from: userOf(inv.from) || 'browser',
      to: wanted || 'ai',
      direction: 'inbound',
      externalId: inv.callId,
    });
    claim(call);
    call.log.info({ sipCallId: inv.callId, route: named ?? '(routing)' }, 'browser INVITE accepted');
    inv.on('cancel', () => void call.end({ by: 'remote', cause: 'cancel' }));
    const signalling: { dialog?: Promise<SipDialog>; established?: SipDialog } = {};
    let leg: ConnectingLeg;
    let answerSdp: string;
    try {
      ({ leg, answerSdp } = await this.media.answer(inv.sdp, {
        callId: call.id,
        log: call.log,
        onClose: (reason) => this.onLegClosed(call, inv, signalling, reason),
      }));
    } catch (err) {
      call.log.warn({ err: (err as Error).message }, 'browser offer refused: 488');
      inv.reject(488, 'Not Acceptable Here (unusable WebRTC offer)');
      await call.end({ by: 'error', cause: 'bad_sdp_offer', detail: (err as Error).message });
      return;
    }
    if (call.ended) return void (await leg.close(call.endReason!));
    inv.progress(180);
    let connected;
    try {
      connected = await this.ctx.connector.prepare(call, leg, named);
    } catch (err) {
      call.log.error({ err: (err as Error).message }, 'could not connect the browser call to its AI route');
      await call.end({ by: 'error', cause: 'connect_failed', detail: (err as Error).message });
      await leg.close({ by: 'error', cause: 'connect_failed' });
      return;
    }
    if (call.ended) return;
    signalling.dialog = inv.answer(answerSdp);
    try {
      signalling.established = await signalling.dialog;
      // The greeting starts once the browser can hear it (ICE + DTLS up), not at the 200.
      await leg.waitConnected(config.browser.mediaTimeoutSec * 1000);
    } catch (err) {
      if (!call.ended) {
        call.log.warn({ err: (err as Error).message }, 'browser call not established');
        await call.end({ by: 'timeout', cause: 'media_timeout', detail: (err as Error).message });
      }
      return;
    }
    if (call.ended) return;
    const dialog = signalling.established;
    dialog.on('bye', (reason) => void call.end(reason ?? { by: 'remote', cause: 'bye' }));
    connected.answered();
    call.log.info('browser call established (ACK, ICE + DTLS)');
  }

  /** Front signalling when the call ends: BYE once answered, a final response before that. */
  private async onLegClosed(
    call: Call,
    inv: IncomingInvite,
    s: { dialog?: Promise<SipDialog>; established?: SipDialog },
    reason: HangupReason,
  ): Promise<void> {
    if (reason.by === 'remote') return;
    if (s.established) return call.settleAfterEnd(s.established.bye(reason.cause));
    if (s.dialog) return call.settleAfterEnd(s.dialog.then((d) => d.bye(reason.cause)));
    if (!inv.cancelled) inv.reject(reason.retryAfterSec !== undefined ? 503 : 480);
  }
}
