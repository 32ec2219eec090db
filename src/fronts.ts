import type { Front, GatewayContext } from './gateway.js';
import { SipFront } from './sip/front.js';
import { WhatsAppFront } from './webrtc/front.js';

/** The fronts enabled by config. Each front registers here as it lands. */
export function buildFronts(ctx: GatewayContext): Front[] {
  const fronts: Front[] = [];
  if (ctx.config.sip.enabled) fronts.push(new SipFront(ctx));
  if (ctx.config.whatsapp.enabled) fronts.push(new WhatsAppFront(ctx));
  return fronts;
}
