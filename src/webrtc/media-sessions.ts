import { randomUUID } from 'node:crypto';
import type { Call } from '../core/call.js';
import { GatewayError } from '../core/errors.js';
import type { GatewayContext, MediaSessionRequest } from '../gateway.js';
import { e164, failCall, waitMedia, type ActiveCall } from './active-call.js';
import { admitWhatsAppCall } from './admission.js';
import { WebRtcLeg, type WebRtcLegOptions } from './webrtc-leg.js';

/**
 * Media-only mode (POST /v1/sessions/start): an external webhook handler owns the WhatsApp
 * signalling and asks us only for the SDP answer; we send Meta nothing.
 */
export class MediaSessions {
  constructor(
    private readonly ctx: GatewayContext,
    /** The front's live calls by WhatsApp call id (a session is keyed by the handler's call id). */
    private readonly active: Map<string, ActiveCall>,
    private readonly legOptions: (call: Call, entry: () => ActiveCall | undefined) => WebRtcLegOptions,
  ) {}

  async start(req: MediaSessionRequest): Promise<{ sdpAnswer: string; call: Call }> {
    if (this.active.has(req.callId)) throw new GatewayError('invalid_state', `session ${req.callId} already exists`);
    const callId = randomUUID();
    const refusal = await admitWhatsAppCall(this.ctx, 'media', callId);
    if (refusal) throw new GatewayError('limit_reached', `WhatsApp ${refusal}`);
    const call = this.ctx.registry.create(
      {
        front: 'whatsapp',
        from: e164(req.fromNumber),
        to: e164(req.toNumber),
        direction: 'inbound',
        externalId: req.callId,
      },
      callId,
    );
    const ref: { entry?: ActiveCall } = {};
    try {
      const { leg, answerSdp } = await WebRtcLeg.answer(
        req.sdpOffer,
        this.legOptions(call, () => ref.entry),
      );
      const entry: ActiveCall = {
        call,
        leg,
        direction: 'inbound',
        waCallId: req.callId,
        graph: undefined,
        signalled: false,
        mediaOnly: true,
        route: req.route,
      };
      ref.entry = entry;
      this.active.set(req.callId, entry);
      call.onEnd(() => leg.close(call.endReason ?? { by: 'gateway', cause: 'ended' }));
      const mediaTimeoutMs = this.ctx.config.whatsapp.mediaTimeoutSec * 1000;
      void (async () => {
        if (await waitMedia(entry, mediaTimeoutMs)) await this.ctx.connector.connect(call, leg, req.route);
      })().catch((err) => failCall(call, err));
      return { sdpAnswer: answerSdp, call };
    } catch (err) {
      await call.end({ by: 'error', cause: 'bad_offer', detail: (err as Error).message });
      throw err;
    }
  }

  async stop(id: string): Promise<boolean> {
    const a = this.active.get(id);
    if (!a?.mediaOnly) return false;
    await a.call.end({ by: 'operator', cause: 'session_stopped' });
    return true;
  }
}
