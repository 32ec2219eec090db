import type { Front, GatewayContext } from './gateway.js';

/** The fronts enabled by config. Each front registers here as it lands. */
export function buildFronts(_ctx: GatewayContext): Front[] {
  return [];
}
