import { feedListener } from '../core/listen-in.js';
import type { Logger } from '../core/logger.js';
import type { GatewayContext } from '../gateway.js';
import type { IncomingInvite, SipDialog } from './engine.js';
import type { WebRtcMediaFactory } from './webrtc-media.js';

/** The Request-URI user of a listen-in INVITE: `listen-<gateway call id>`. */
const LISTEN_USER = /^listen-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i;

/** The call id a listen-in Request-URI user names, or undefined when it is not one. */
export function listenTarget(user: string): string | undefined {
  return LISTEN_USER.exec(user)?.[1]?.toLowerCase();
}

/**
 * Operator listen-in from the console: the browser phone sends a receive-only INVITE to
 * `sip:listen-<call id>@...` (already authenticated with the ops token by BrowserCalls), gets a
 * WebRTC leg of its own (the same werift leg as browser and WhatsApp calls) and hears the call's
 * caller and AI mixed. A listener is not a call: it never reaches the AI, is not in the registry,
 * and never changes the call's media. At most `browser.maxListenersPerCall` per call; the
 * listener's BYE or the call's end closes it.
 */
export class BrowserListen {
  private readonly perCall = new Map<string, number>();

  constructor(
    private readonly ctx: GatewayContext,
    private readonly media: WebRtcMediaFactory,
    private readonly log: Logger,
  ) {}

  async onInvite(inv: IncomingInvite, callId: string, offerSdp: string): Promise<void> {
    const { registry, config } = this.ctx;
    const call = registry.get(callId);
    const log = this.log.child({ sipCallId: inv.callId, listenTo: callId });
    if (!call || call.ended) return inv.reject(404, 'Not Found (no live call with that id)');
    if (!call.tapSource) return inv.reject(480, 'Temporarily Unavailable (the call has no media yet)');
    const count = this.perCall.get(callId) ?? 0;
    if (count >= config.browser.maxListenersPerCall) {
      log.warn({ listeners: count }, 'listen-in refused: listener limit per call reached (486)');
      return inv.reject(486, 'Busy Here (listener limit for this call)');
    }
    this.perCall.set(callId, count + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (this.perCall.get(callId) ?? 1) - 1;
      if (n > 0) this.perCall.set(callId, n);
      else this.perCall.delete(callId);
    };
    const state: { dialog?: SipDialog; stopFeed?: () => void } = {};
    let answered: Awaited<ReturnType<WebRtcMediaFactory['answer']>>;
    try {
      answered = await this.media.answer(offerSdp, {
        callId: call.id,
        log: call.log.child({ listener: inv.callId }),
        onClose: async (reason) => {
          state.stopFeed?.();
          release();
          if (reason.by !== 'remote') await state.dialog?.bye('listen-in over');
        },
      });
    } catch (err) {
      release();
      log.warn({ err: (err as Error).message }, 'listen-in offer refused: 488');
      return inv.reject(488, 'Not Acceptable Here (unusable WebRTC offer)');
    }
    const { leg, answerSdp } = answered;
    const endListener = () => void leg.close({ by: 'gateway', cause: 'call_ended' });
    call.once('ended', endListener);
    leg.on('hangup', (reason) => void leg.close(reason));
    inv.on('cancel', () => void leg.close({ by: 'remote', cause: 'cancel' }));
    if (call.ended) return void leg.close({ by: 'gateway', cause: 'call_ended' });
    try {
      state.dialog = await inv.answer(answerSdp);
      await leg.waitConnected(config.browser.mediaTimeoutSec * 1000);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'listen-in not established');
      call.off('ended', endListener);
      return void leg.close({ by: 'timeout', cause: 'media_timeout' });
    }
    state.dialog.on('bye', () => {
      call.off('ended', endListener);
      void leg.close({ by: 'remote', cause: 'bye' });
    });
    // The call may have ended while the listener connected; a transfer since is followed by the feed.
    const source = call.tapSource;
    if (call.ended || !source) return endListener();
    state.stopFeed = feedListener(call, source.tapRates.other, leg, call.id);
    call.log.info({ listener: inv.callId, listeners: this.perCall.get(callId) }, 'operator listening in');
  }
}
