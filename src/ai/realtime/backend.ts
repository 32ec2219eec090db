import type { RealtimeRouteConfig } from '../../config/schema.js';
import type { AiBackend, AiSession, AiSessionOptions } from '../session.js';
import { type RealtimeHooks, RealtimeSession } from './session.js';

/** Route kind `realtime`: each call gets its own OpenAI Realtime WebSocket session. */
export class RealtimeBackend implements AiBackend {
  readonly kind = 'realtime';
  constructor(
    private readonly route: RealtimeRouteConfig,
    private readonly hooks: RealtimeHooks = {},
  ) {}

  open(opts: AiSessionOptions): AiSession {
    return new RealtimeSession(this.route, opts, this.hooks);
  }
}
