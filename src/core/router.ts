import type { GatewayConfig, RouteConfig, RoutingRule } from '../config/schema.js';
import type { CallInfo } from './call.js';
import { GatewayError } from './errors.js';

export interface ResolvedRoute {
  name: string;
  config: RouteConfig;
  /** Which rule decided it, for the call log. */
  because: string;
}

function matchNumber(pattern: string, number: string): boolean {
  return pattern.endsWith('*') ? number.startsWith(pattern.slice(0, -1)) : pattern === number;
}

function ruleMatches(rule: RoutingRule, info: CallInfo): boolean {
  return (
    (!rule.front || rule.front === info.front) &&
    (!rule.trunk || rule.trunk === info.trunk) &&
    (!rule.to || matchNumber(rule.to, info.to))
  );
}

/**
 * Picks the AI route for a call: first matching rule, then the trunk's own route, then `fallback`
 * (a front's own default, e.g. a WhatsApp business number's route), then routing.default.
 */
export class Router {
  constructor(private readonly config: Pick<GatewayConfig, 'routes' | 'routing' | 'trunks'>) {}

  resolve(info: CallInfo, callId?: string, fallback?: string): ResolvedRoute {
    const rules = this.config.routing.rules;
    const idx = rules.findIndex((r) => ruleMatches(r, info));
    let name: string;
    let because: string;
    if (idx >= 0) {
      name = rules[idx]!.route;
      because = `rule ${idx}`;
    } else {
      const trunkRoute = info.trunk ? this.config.trunks.find((t) => t.name === info.trunk)?.route : undefined;
      name = trunkRoute ?? fallback ?? this.config.routing.default;
      because = trunkRoute ? `trunk ${info.trunk}` : fallback ? 'front default' : 'default';
    }
    const config = this.config.routes[name];
    if (!config) throw new GatewayError('not_found', `route "${name}" is not configured`, callId);
    return { name, config, because };
  }

  routeConfig(name: string): RouteConfig | undefined {
    return this.config.routes[name];
  }
}
