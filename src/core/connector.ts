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

/** An AI session that is ready, on a bridge that is held until the call is answered. */
export interface Prepared extends Connected {
  /** The call is answered: play the AI's audio to the leg and the caller's audio to the AI. */
  release(): void;
}

/**
 * Connects an answered call's leg to the AI its route names. Every front goes through here, so
 * routing, format choice, cleanup order and the AI's control over the call are the same for
 * SIP, WhatsApp and API-originated calls.
 */
export class CallConnector {
  constructor(private readonly deps: ConnectorDeps) {}

  async connect(call: Call, leg: MediaLeg, routeName?: string): Promise<Connected> {
    let prepared: Prepared;
    try {
      prepared = await this.prepare(call, leg, routeName);
    } catch (err) {
      if (err instanceof GatewayError && err.code === 'ai_connect_failed' && !call.ended) {
        await call.end({ by: 'error', cause: 'ai_connect_failed', detail: err.message });
      }
      throw err;
    }
    prepared.release();
    return prepared;
  }

  /**
   * AI first, then answer: opens the route's AI session and waits until it is ready, with the bridge
   * running but held (the leg gets silence, the AI's first words wait in the playout buffer). The
   * front answers its call, then calls `release()`. When the AI cannot be reached this throws
   * `ai_connect_failed` and leaves the call up, so the front can refuse or apologise its own way.
   */
  async prepare(call: Call, leg: MediaLeg, routeName?: string | ResolvedRoute): Promise<Prepared> {
    const route =
      typeof routeName === 'object'
        ? routeName
        : routeName
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
    let failed = false;
    session.on('closed', (reason) => {
      if (!call.ended && !failed) void call.end({ by: 'ai', cause: 'ai_closed', detail: reason });
    });
    b.hold();
    b.start();
    try {
      await session.start();
    } catch (err) {
      failed = true;
      const detail = (err as Error).message;
      call.log.error({ err: detail }, 'AI session failed to start');
      b.stop();
      call.media = undefined;
      await session.close('ai_connect_failed');
      throw err instanceof GatewayError && err.code === 'ai_connect_failed'
        ? err
        : new GatewayError('ai_connect_failed', detail, call.id, { cause: err });
    }
    return {
      bridge: b,
      session,
      route,
      release: () => {
        b.release();
        if (call.state === 'ringing') call.transition('answered');
        if (!call.ended) call.transition('bridged');
      },
    };
  }

  private requireRoute(name: string, callId: string) {
    const cfg = this.deps.router.routeConfig(name);
    if (!cfg) throw new GatewayError('not_found', `route "${name}" is not configured`, callId);
    return cfg;
  }
}
