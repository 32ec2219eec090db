import { GatewayError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { HangupReason } from '../../core/media-leg.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { ModifyRequest, SipDialog, SipDialogEvents } from '../engine.js';
import type { DialogLike, SrfLike, SrfRequestLike, SrfResponseLike } from './srf-types.js';

/** What a dialog needs from its engine: the link's state, and BYEs kept for when it comes back. */
export interface DialogHost {
  readonly srf: SrfLike;
  linkUp(): boolean;
  track(d: DrachtioDialog): void;
  untrack(d: DrachtioDialog): void;
  /** Send this BYE once the control connection is back (the link was down when the call ended). */
  byeWhenBack(stackDialogId: string, headers: Record<string, string>): void;
}

/**
 * Reasons drachtio-server writes into the BYE it sends on its own (it then tells us as if the far
 * end had sent it): the ACK never came, or the RFC 4028 session expired / its refresh failed.
 */
export function serverByeReason(reason: string | undefined): HangupReason | undefined {
  if (!reason) return undefined;
  if (/ACK timeout/i.test(reason)) return { by: 'timeout', cause: 'ack_timeout', detail: reason };
  if (/session timer expired/i.test(reason)) return { by: 'timeout', cause: 'session_expired', detail: reason };
  return undefined;
}

/** 64·T1: how long drachtio-server resends our 2xx to a re-INVITE waiting for its ACK. */
const REINVITE_ACK_WAIT_MS = 64 * 500;

const byeHeaders = (reason: string): Record<string, string> => ({
  Reason: `Q.850;cause=16;text="${reason.replace(/["\\\r\n]/g, '')}"`,
});

/**
 * A confirmed INVITE dialog (either direction) held by drachtio-server. drachtio-server answers
 * in-dialog retransmissions and runs RFC 4028 itself (refresh re-INVITEs when we are the refresher,
 * BYE when the session expires); we see the far end's BYE ('destroy'), re-INVITE and UPDATE.
 */
export class DrachtioDialog extends TypedEmitter<SipDialogEvents> implements SipDialog {
  private gone = false;
  /** Set while the ACK of our 2xx to a body-less re-INVITE is awaited. */
  private stopAwaitingAck: (() => void) | undefined;

  constructor(
    private readonly dialog: DialogLike,
    readonly callId: string,
    private readonly host: DialogHost,
    private readonly log: Logger,
    private readonly reinviteAckWaitMs = REINVITE_ACK_WAIT_MS,
  ) {
    super();
    host.track(this);
    // 'destroy' is "a BYE arrived" (our own destroy() does not emit it); drachtio-server also
    // reports its own BYEs (ACK timeout, session expiry) this way, with their Reason text.
    dialog.on('destroy', (_msg, reason) => {
      if (this.gone) return;
      this.finish();
      const own = serverByeReason(reason);
      if (own) this.log.warn({ sipCallId: callId, reason }, 'drachtio-server ended the dialog itself');
      this.emit('bye', own);
      this.emit('destroyed');
    });
    const onModify = (req: SrfRequestLike, res: SrfResponseLike) => {
      let answered = false;
      const m: ModifyRequest = {
        method: req.method === 'UPDATE' ? 'UPDATE' : 'INVITE',
        sdp: req.body?.trim() ? req.body : undefined,
        header: (name) => (req.has(name) ? req.get(name) : undefined),
        respond: (a) => {
          if (answered) return;
          answered = true;
          if ('status' in a) return void res.send(a.status, a.reason ?? '', { headers: a.headers ?? {} });
          // A body-less re-INVITE: our offer goes in the 200, the answer comes in its ACK.
          if (a.onAck && req.method === 'INVITE') this.awaitReinviteAck(a.onAck);
          if (a.sdp === undefined) return void res.send(200, { headers: a.headers ?? {} });
          res.send(200, { body: a.sdp, headers: { 'Content-Type': 'application/sdp', ...a.headers } });
        },
      };
      this.emit('modify', m);
      if (!answered) m.respond({ status: 488 });
    };
    dialog.on('modify', onModify);
    dialog.on('update', onModify);
  }

  /**
   * drachtio-server relays the ACK of our 2xx to a re-INVITE and drachtio-srf's dialog emits it as
   * 'ack'; its body is the far end's answer. Without one within 64·T1 (drachtio-server gave up
   * resending the 2xx) the offer stays unanswered: onAck(undefined).
   */
  private awaitReinviteAck(onAck: (sdp: string | undefined) => void): void {
    this.stopAwaitingAck?.();
    const stop = () => {
      clearTimeout(timer);
      this.dialog.removeListener('ack', onAckEvent);
      this.stopAwaitingAck = undefined;
    };
    const done = (sdp: string | undefined) => {
      stop();
      onAck(sdp);
    };
    const onAckEvent = (ack?: SrfRequestLike) => done(ack?.body?.trim() ? ack.body : undefined);
    const timer = setTimeout(() => done(undefined), this.reinviteAckWaitMs);
    this.dialog.on('ack', onAckEvent);
    this.stopAwaitingAck = stop;
  }

  get stackDialogId(): string {
    return this.dialog.id;
  }

  private finish(): void {
    this.gone = true;
    this.stopAwaitingAck?.(); // the call is over: its media has nothing left to apply
    this.host.untrack(this);
  }

  async bye(reason = 'normal'): Promise<void> {
    if (this.gone) return;
    this.finish();
    const headers = byeHeaders(reason);
    try {
      if (!this.host.linkUp()) this.host.byeWhenBack(this.dialog.id, headers);
      else if (this.dialog.socket?.destroyed && this.host.srf.requestInDialog) {
        // Created before a reconnect: drachtio-srf would write to the dead socket.
        await this.host.srf.requestInDialog(this.dialog.id, 'BYE', headers);
        this.dialog.removeAllListeners();
      } else await this.dialog.destroy({ headers });
    } catch (err) {
      this.log.warn({ sipCallId: this.callId, err: (err as Error).message }, 'BYE via drachtio failed');
    }
    this.emit('destroyed');
  }

  /**
   * After a reconnect: does drachtio-server still hold this dialog? An in-dialog OPTIONS answers it
   * (a restarted server knows none of our dialogs and refuses at once, nothing goes on the wire).
   */
  async stillKnown(): Promise<boolean> {
    if (this.gone || !this.host.srf.requestInDialog) return true;
    try {
      await this.host.srf.requestInDialog(this.dialog.id, 'OPTIONS', {});
      return true;
    } catch (err) {
      return !/ENODIALOG|unable to find dialog/i.test(`${(err as { code?: string }).code} ${(err as Error).message}`);
    }
  }

  /** The control connection stayed down past the grace period: end the call, BYE once it is back. */
  linkLost(): void {
    if (this.gone) return;
    this.finish();
    this.host.byeWhenBack(this.dialog.id, byeHeaders('sip_link_lost'));
    this.emit('bye', { by: 'error', cause: 'sip_link_lost', detail: 'connection to drachtio-server lost' });
    this.emit('destroyed');
  }

  /** The dialog vanished from drachtio-server (it restarted): nothing to BYE, the call is over. */
  forget(): void {
    if (this.gone) return;
    this.finish();
    this.dialog.removeAllListeners();
    this.emit('bye', { by: 'error', cause: 'sip_link_lost', detail: 'drachtio-server restarted: dialog gone' });
    this.emit('destroyed');
  }

  async refer(target: string, timeoutMs = 8000): Promise<void> {
    if (this.gone) throw new GatewayError('leg_closed', 'dialog is gone');
    if (!this.host.linkUp()) throw new GatewayError('upstream', 'drachtio-server link is down: cannot send REFER');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new GatewayError('timeout', `no answer to REFER within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const res = await Promise.race([
        this.dialog.request({ method: 'REFER', headers: { 'Refer-To': `<${target}>` } }),
        timeout,
      ]);
      if (res.status >= 300)
        throw new GatewayError('upstream', `REFER rejected: ${res.status} ${res.reason ?? ''}`.trim(), undefined, {
          details: { status: res.status },
        });
    } finally {
      clearTimeout(timer);
    }
  }
}
