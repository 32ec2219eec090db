import type { AiBackend, AiSession, CallControl } from '../ai/session.js';
import { Bridge, type BridgeHooks } from './bridge.js';
import type { Call } from './call.js';
import { GatewayError } from './errors.js';
import type { FrameClock } from './frame-clock.js';
import type { MediaLeg } from './media-leg.js';
import type { ResolvedRoute, Router } from './router.js';

export interface ConnectorDeps {
  router: Router;
  /** The AI backend for a route (built once per route at start). */
  backendFor: (route: ResolvedRoute) => AiBackend;
  clock: FrameClock;
  hooks?: BridgeHooks;
}

export interface Connected {
  bridge: Bridge;
  session: AiSession;
  route: ResolvedRoute;
}

/**
 * Connects an answered call's leg to the AI its route names. Every front goes through here, so
 * routing, format choice, cleanup order and the AI's control over the call are the same for
 * SIP, WhatsApp and API-originated calls.
 */
export class CallConnector {
  constructor(private readonly deps: ConnectorDeps) {}

  async connect(call: Call, leg: MediaLeg, routeName?: string): Promise<Connected> {
    const route = routeName
      ? { name: routeName, config: this.requireRoute(routeName, call.id), because: 'requested' }
      : this.deps.router.resolve(call.info, call.id);
    call.route = route.name;
    call.log.info({ route: route.name, kind: route.config.kind, because: route.because }, 'route chosen');
    call.addLeg(leg);
    // The session needs call control before the bridge exists; control reaches the bridge through this ref.
    const ref: { bridge?: Bridge } = {};
    const control: CallControl = {
      hangupAfterPlayout: (reason) => {
        if (ref.bridge) ref.bridge.hangupAfterPlayout(reason);
        else void call.end({ by: 'ai', cause: reason });
      },
      transfer: async (destination) => {
        if (!call.transfer) return { ok: false, detail: `transfer is not supported for ${call.info.front} calls` };
        try {
          await call.transfer(destination);
          return { ok: true, detail: `transferred to ${destination}` };
        } catch (err) {
          return { ok: false, detail: (err as Error).message };
        }
      },
    };
    const session = this.deps
      .backendFor(route)
      .open({ callId: call.id, legFormat: leg.format, log: call.log, control });
    const b = new Bridge(call, leg, session, this.deps.clock, this.deps.hooks);
    ref.bridge = b;
    call.media = { bridge: b, session };
    call.onEnd(() => session.close(call.endReason?.cause ?? 'ended'));
    call.onEnd(() => b.stop());
    session.on('closed', (reason) => {
      if (!call.ended) void call.end({ by: 'ai', cause: 'ai_closed', detail: reason });
    });
    b.start();
    try {
      await session.start();
    } catch (err) {
      const detail = (err as Error).message;
      call.log.error({ err: detail }, 'AI session failed to start');
      await call.end({ by: 'error', cause: 'ai_connect_failed', detail });
      throw err instanceof GatewayError ? err : new GatewayError('ai_connect_failed', detail, call.id, { cause: err });
    }
    if (call.state === 'ringing') call.transition('answered');
    if (!call.ended) call.transition('bridged');
    return { bridge: b, session, route };
  }

  private requireRoute(name: string, callId: string) {
    const cfg = this.deps.router.routeConfig(name);
    if (!cfg) throw new GatewayError('not_found', `route "${name}" is not configured`, callId);
    return cfg;
  }
}
