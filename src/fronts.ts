import type { Front, GatewayContext } from './gateway.js';
import { WhatsAppFront } from './webrtc/front.js';

/** The fronts enabled by config. Each front registers here as it lands. */
export function buildFronts(ctx: GatewayContext): Front[] {
  const fronts: Front[] = [];
  if (ctx.config.whatsapp.enabled) fronts.push(new WhatsAppFront(ctx));
  return fronts;
}
