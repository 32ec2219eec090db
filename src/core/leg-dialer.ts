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

/**
 * A person to hand a call to (bridged transfer): a number (through a SIP trunk), a sip:/sips: URI,
 * or `whatsapp:+<number>` (a business-initiated WhatsApp call). Placed by the front that owns the
 * destination; the core only bridges the leg it gets back.
 */
export interface PartyRequest {
  call: Call;
  /** Canonical destination (already allowed by the transfer policy or the operator). */
  destination: string;
  /** Trunk to dial numbers through; the front's default when absent. */
  trunk?: string;
  /** CANCEL / give up when not answered within this time. */
  timeoutMs: number;
}

/**
 * Places the second leg of a bridged transfer. Rejects with a GatewayError whose `details.status`
 * is the far end's final status (486 busy, 603 declined...) or whose code is `timeout` (no answer).
 */
export interface PartyDialer {
  /** Whether this dialer places calls to `destination` (e.g. numbers and sip: URIs for SIP). */
  handles(destination: string): boolean;
  dialParty(req: PartyRequest): Promise<MediaLeg>;
}
