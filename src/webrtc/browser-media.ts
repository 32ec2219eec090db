import type { GatewayConfig } from '../config/schema.js';
import type { WebRtcMediaFactory } from '../sip/webrtc-media.js';
import { WebRtcLeg } from './webrtc-leg.js';

/**
 * WebRTC legs for browser calls (SIP over WebSocket): the same werift leg as WhatsApp calls, on
 * the browser section's address and port range.
 */
export function browserMedia(cfg: GatewayConfig['browser']): WebRtcMediaFactory {
  return {
    answer: (offerSdp, opts) =>
      WebRtcLeg.answer(offerSdp, {
        callId: opts.callId,
        log: opts.log,
        publicIp: cfg.publicIp,
        portRange: [cfg.udpPortMin, cfg.udpPortMax],
        inactivityMs: cfg.rtpTimeoutSec * 1000,
        onClose: opts.onClose,
      }),
  };
}
