import type { HangupReason, MediaLeg } from '../core/media-leg.js';
import type { Logger } from '../core/logger.js';

/** A media leg that first has to connect (ICE + DTLS) before it carries audio. */
export interface ConnectingLeg extends MediaLeg {
  /** Resolves once ICE and DTLS are up; rejects on failure, close or timeout. */
  waitConnected(timeoutMs: number): Promise<void>;
}

/**
 * The media-factory port the SIP front needs for offers that are WebRTC (ICE, DTLS-SRTP, Opus:
 * `UDP/TLS/RTP/SAVPF`), e.g. a browser phone over SIP-over-WebSocket. The SIP front keeps its own
 * RtpLeg for plain `RTP/AVP` offers from trunks; WebRTC offers go to the WhatsApp front's werift
 * leg through this interface (wired in src/fronts.ts), so there is one WebRTC media stack.
 */
export interface WebRtcMediaFactory {
  answer(
    offerSdp: string,
    opts: { callId: string; log: Logger; onClose: (reason: HangupReason) => Promise<void> },
  ): Promise<{ leg: ConnectingLeg; answerSdp: string }>;
}

/** Whether an SDP offer is WebRTC media (an audio m= line with a DTLS-SRTP profile, RFC 5764). */
export function isWebRtcOffer(sdp: string): boolean {
  return /^m=audio \d+ (UDP\/TLS\/RTP\/SAVPF|UDP\/TLS\/RTP\/SAVP)\b/im.test(sdp);
}
