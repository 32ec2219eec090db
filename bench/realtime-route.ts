import { type RealtimeRouteConfig, routeSchema } from '../src/config/schema.js';
import { Router } from '../src/core/router.js';

/**
 * The `openai` route of the AI benches: the local Realtime stand-in at `url`, transcription off
 * (the stand-in's, not ours to time), parsed with the real schema so defaults are production's.
 */
export function benchRoute(url: string, extra: Record<string, unknown> = {}): RealtimeRouteConfig {
  return routeSchema.parse({
    kind: 'realtime',
    url,
    apiKey: 'sk-bench',
    transcription: false,
    ...extra,
  }) as RealtimeRouteConfig;
}

/** A router sending every call to `route`. */
export const routerFor = (route: RealtimeRouteConfig): Router =>
  new Router({ routes: { openai: route }, routing: { default: 'openai', rules: [] }, trunks: [] });
