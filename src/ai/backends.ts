import type { RouteConfig } from '../config/schema.js';
import { GatewayError } from '../core/errors.js';
import type { ResolvedRoute } from '../core/router.js';
import { LocalAgentBackend } from './local/agent.js';
import { RealtimeBackend } from './realtime/backend.js';
import type { AiBackend } from './session.js';

export type BackendMaker = (route: RouteConfig & { kind: string }) => AiBackend;

/**
 * Builds (once per route, lazily) the AI backend a route names. New backend kinds register a
 * maker here; fronts never see which kind they are talking to.
 */
export class BackendRegistry {
  private readonly makers = new Map<string, BackendMaker>();
  private readonly built = new Map<string, AiBackend>();

  constructor() {
    this.register('local', (r) => new LocalAgentBackend(r as Extract<RouteConfig, { kind: 'local' }>));
    this.register('realtime', (r) => new RealtimeBackend(r as Extract<RouteConfig, { kind: 'realtime' }>));
  }

  register(kind: string, maker: BackendMaker): void {
    this.makers.set(kind, maker);
  }

  /** Use a prebuilt backend for a route (backends that need gateway wiring, e.g. openai-sip). */
  bind(routeName: string, backend: AiBackend): void {
    this.built.set(routeName, backend);
  }

  backendFor(route: ResolvedRoute): AiBackend {
    let b = this.built.get(route.name);
    if (!b) {
      const maker = this.makers.get(route.config.kind);
      if (!maker) throw new GatewayError('not_found', `no AI backend for route kind "${route.config.kind}"`);
      b = maker(route.config);
      this.built.set(route.name, b);
    }
    return b;
  }
}
