import type { Call } from './call.js';
import type { MediaLeg } from './media-leg.js';

/** An outbound leg to a URI (e.g. OpenAI's SIP endpoint), placed by a front that can dial. */
export interface OutboundLegRequest {
  call: Call;
  /** Target, e.g. `sip:proj_123@sip.api.openai.com;transport=tls`. */
  uri: string;
  /** Caller identity to present (E.164 or SIP URI user part). */
  from: string;
  to: string;
  /** Extra headers, e.g. our call id for matching the far end's webhook. */
  headers: Record<string, string>;
  /** Codec preference, best first. */
  codecs: ('PCMU' | 'PCMA')[];
  /** Give up (CANCEL) if not answered within this time. */
  timeoutMs: number;
}

/** Resolves with a started leg once the far end answers; rejects with a GatewayError otherwise. */
export interface LegDialer {
  dial(req: OutboundLegRequest): Promise<MediaLeg>;
}
