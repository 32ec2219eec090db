import type { TrunkConfig } from '../config/schema.js';
import type { Call } from '../core/call.js';
import type { IncomingInvite, ModifyRequest, SipDialog, SipEngine } from './engine.js';
import type { RtpLeg } from './rtp-leg.js';
import { answerDirection, answerShape, buildAnswer, readOffer, type AnswerParams, type Direction } from './sdp.js';
import { negotiateAsUas, SessionTimer, type SessionTerms } from './session-timer.js';

/**
 * An established inbound call's mid-dialog life: the carrier's SDP answers (delayed offer), RFC 4028
 * session timers, and re-INVITE/UPDATE (refresh, re-offer, hold). Kept apart from the front's
 * admission and set-up of calls.
 */

/** What the SIP front keeps per call. */
export interface SipCall {
  call: Call;
  invite: IncomingInvite;
  leg: RtpLeg;
  trunk: TrunkConfig;
  answer: AnswerParams;
  lastSdp: string;
  dialog: Promise<SipDialog> | undefined;
  /** Set once the ACK confirmed the dialog. */
  established: SipDialog | undefined;
  sessionTimer: SessionTimer | undefined;
}

export interface MidDialogOptions {
  engine: Pick<SipEngine, 'sessionTimers' | 'canRefresh'>;
  minSessionExpiresSec: number;
}

/** The carrier's answer to our offer (delayed offer: in the ACK) applied to the leg. */
export function applyAnswer(state: SipCall, sdp: string | undefined, where: string): boolean {
  const got = sdp ? readOffer(sdp, [state.answer.codec], state.trunk.telephoneEvent) : undefined;
  if (!got?.ok) {
    state.call.log.warn({ where, reason: got?.reason ?? 'no SDP' }, 'no usable SDP answer to our offer');
    return false;
  }
  // Their answer's direction is from their side: ours mirrors it.
  const dir: Direction = answerDirection(got.offer.direction);
  state.leg.update(got.offer, dir);
  state.call.log.info({ where, remote: state.leg.remoteAddress, direction: dir }, 'SDP answer applied');
  return true;
}

/**
 * RFC 4028: we refresh (UPDATE, or re-INVITE with our SDP) when we are the refresher; otherwise
 * the trunk's refreshes keep the session alive. Either way a dead session ends with BYE.
 */
export function startSessionTimer(state: SipCall, dialog: SipDialog, terms: SessionTerms): SessionTimer {
  const refresh = dialog.refresh?.bind(dialog);
  return new SessionTimer(terms, {
    log: state.call.log,
    refresh: refresh && ((interval) => refresh(interval, { sdp: state.lastSdp })),
    expired: (detail) => void state.call.end({ by: 'timeout', cause: 'session_expired', detail }),
  });
}

/** A re-INVITE or UPDATE from the carrier: session refresh, new offer, hold, or a request for our offer. */
export function answerModify(state: SipCall, dialog: SipDialog, req: ModifyRequest, opts: MidDialogOptions): void {
  const { call, leg, answer } = state;
  // RFC 4028 §9: a re-INVITE/UPDATE is a session refresh and renegotiates the timer.
  const engineTimers = opts.engine.sessionTimers === 'engine';
  const renegotiated = req.header
    ? negotiateAsUas((n) => req.header!(n), {
        minSec: opts.minSessionExpiresSec,
        canRefresh: engineTimers || (opts.engine.canRefresh && !!dialog.refresh),
        current: state.sessionTimer?.current,
      })
    : undefined;
  if (renegotiated && 'tooSmall' in renegotiated)
    return req.respond({
      status: 422,
      reason: 'Session Interval Too Small',
      headers: { 'min-se': String(renegotiated.minSe) },
    });
  const headers = renegotiated?.headers ?? {};
  const refreshed = () => {
    if (engineTimers) return; // the engine's SIP stack keeps the session timer
    if (renegotiated) {
      if (state.sessionTimer) state.sessionTimer.restart(renegotiated.terms);
      else state.sessionTimer = startSessionTimer(state, dialog, renegotiated.terms);
    } else state.sessionTimer?.restart(); // no Session-Expires: still proof the session is alive
  };
  if (!req.sdp) {
    if (req.method === 'UPDATE') {
      // RFC 3311: an UPDATE without an offer is answered without SDP (a pure session refresh).
      req.respond({ headers });
    } else {
      // A body-less re-INVITE asks for our offer (our current description); the answer comes in the ACK.
      req.respond({
        sdp: state.lastSdp,
        headers,
        onAck: (sdp) => {
          if (!call.ended && !applyAnswer(state, sdp, 're-INVITE ACK'))
            call.log.warn('re-INVITE ACK without a usable answer: media unchanged');
        },
      });
    }
    return refreshed();
  }
  const family = answer.address.includes(':') ? 6 : 4; // the leg's sockets cannot change IP version
  const offered = readOffer(req.sdp, [answer.codec], state.trunk.telephoneEvent, [family]);
  if (!offered.ok) {
    call.log.warn({ reason: offered.reason }, 're-INVITE offer refused');
    return req.respond({ status: offered.status, reason: offered.reason });
  }
  const dir = answerDirection(offered.offer.direction);
  leg.update(offered.offer, dir);
  const next = {
    ...answer,
    direction: dir,
    dtmfPayloadType: offered.offer.dtmfPayloadType,
    ...answerShape(offered.offer),
  };
  if (buildAnswer({ ...next, version: answer.version }) !== state.lastSdp) next.version = answer.version + 1;
  state.answer = next;
  state.lastSdp = buildAnswer(next);
  call.log.info({ offered: offered.offer.direction, answered: dir, sdpVersion: next.version }, 're-INVITE answered');
  req.respond({ sdp: state.lastSdp, headers });
  refreshed();
}
