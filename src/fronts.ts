import type { Front, GatewayContext } from './gateway.js';
import { SipFront } from './sip/front.js';
import { browserMedia } from './webrtc/browser-media.js';
import { WhatsAppFront } from './webrtc/front.js';

/** The fronts enabled by config. Each front registers here as it lands. */
export function buildFronts(ctx: GatewayContext): Front[] {
  const fronts: Front[] = [];
  // Browser phones reach the AI through the SIP front (SIP over WebSocket) with the werift leg.
  if (ctx.config.sip.enabled) fronts.push(new SipFront(ctx, { webrtc: browserMedia(ctx.config.browser) }));
  if (ctx.config.whatsapp.enabled) fronts.push(new WhatsAppFront(ctx));
  return fronts;
}
