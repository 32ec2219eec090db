import type { AiBackend, AiSession, CallControl } from '../ai/session.js';
import type { RouteConfig } from '../config/schema.js';
import { ApologySession } from './apology-session.js';
import { Bridge, type BridgeHooks } from './bridge.js';
import type { Call } from './call.js';
import { GatewayError } from './errors.js';
import type { FrameClock } from './frame-clock.js';
import { DEFAULT_TRANSFER, Handoff } from './handoff.js';
import { KeypadCollector, keypadText } from './keypad.js';
import type { PartyDialer } from './leg-dialer.js';
import type { MediaLeg } from './media-leg.js';
import type { ResolvedRoute, Router } from './router.js';

export interface ConnectorDeps {
  router: Router;
  /** The AI backend for a route (built once per route at start). */
  backendFor: (route: ResolvedRoute) => AiBackend;
  clock: FrameClock;
  hooks?: BridgeHooks;
  /** The front that can place a bridged transfer's second leg to a destination (set once fronts start). */
  partyDialerFor?: (destination: string) => PartyDialer | undefined;
}

export interface Connected {
  bridge: Bridge;
  session: AiSession;
  route: ResolvedRoute;
  /**
   * The AI could not be reached and the route says `onAiUnavailable: apologise`: `session` is the
   * spoken apology. The front answers as usual; the call hangs up after the apology.
   */
  apology: boolean;
  /**
   * The caller can hear us (SIP 200 sent, WhatsApp accept done, callee answered): the call goes
   * answered → bridged, caller audio starts flowing to the AI and the AI takes its first turn
   * (route `firstTurn`). Idempotent; a no-op once the call has ended.
   */
  answered(): void;
}

/** Used when a route kind has no connectTimeoutMs (local agent): still never wait forever. */
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * Connects a call's leg to the AI its route names. Every front goes through here, so routing,
 * format choice, cleanup order, the AI's control over the call and what happens when the AI is
 * unavailable are the same for SIP, WhatsApp and API-originated calls.
 *
 * Two phases, so the AI is ready before anyone is answered:
 * - `prepare()` while the call rings: opens and configures the AI session, bounded by the route's
 *   `connectTimeoutMs`. When the AI cannot be reached or refuses, either the call ends with
 *   cause `ai_connect_failed` and `retryAfterSec` set (the front refuses: SIP 503 + Retry-After,
 *   WhatsApp reject) and prepare() rejects, or (`onAiUnavailable: apologise`) it resolves with a
 *   spoken apology in place of the AI.
 * - `answered()` on the result once the front has answered: the first turn starts.
 * `connect()` does both at once, for calls that are already answered when they reach the core.
 */
export class CallConnector {
  constructor(private readonly deps: ConnectorDeps) {}

  async connect(call: Call, leg: MediaLeg, routeName?: string): Promise<Connected> {
    const connected = await this.prepare(call, leg, routeName);
    connected.answered();
    return connected;
  }

  /**
   * `route`: a route name, or a route the front already resolved (e.g. a WhatsApp number's own).
   * `noApology`: refuse even when the route says apologise (a call we place: nobody called us).
   */
  async prepare(
    call: Call,
    leg: MediaLeg,
    route?: string | ResolvedRoute,
    opts: { noApology?: boolean } = {},
  ): Promise<Connected> {
    const resolved = typeof route === 'object' ? route : this.resolveRoute(call, route);
    return this.prepareOn(call, leg, resolved, opts.noApology === true);
  }

  private resolveRoute(call: Call, routeName: string | undefined): ResolvedRoute {
    return routeName
      ? { name: routeName, config: this.requireRoute(routeName, call.id), because: 'requested' }
      : this.deps.router.resolve(call.info, call.id);
  }

  private async prepareOn(call: Call, leg: MediaLeg, route: ResolvedRoute, noApology: boolean): Promise<Connected> {
    call.route = route.name;
    call.log.info({ route: route.name, kind: route.config.kind, because: route.because }, 'route chosen');
    call.addLeg(leg);
    const live: { session?: AiSession; bridge?: Bridge } = {};
    const control: CallControl = {
      hangupAfterPlayout: (reason) => {
        // Not answered yet: nobody can hear what is left to play, so the call (still ringing) ends now.
        if (live.bridge && call.state !== 'ringing') live.bridge.hangupAfterPlayout(reason);
        else void call.end({ by: 'ai', cause: reason });
      },
      transfer: (destination, opts) => handoff.transfer({ destination, brief: opts?.brief, by: 'ai' }),
      sendDtmf: (digits) => sendDigits(leg, digits),
    };
    const handoff = new Handoff(
      call,
      leg,
      transferConfig(route.config),
      () =>
        live.bridge && live.session
          ? {
              bridge: live.bridge,
              detach: async (reason) => {
                const session = live.session;
                live.session = undefined;
                live.bridge?.stop();
                live.bridge = undefined;
                call.media = undefined;
                keypad?.stop();
                await session?.close(reason);
              },
            }
          : undefined,
      { clock: this.deps.clock, partyDialerFor: (d) => this.deps.partyDialerFor?.(d) },
    );
    call.handoff = (req) => handoff.transfer(req);
    const keypadCfg = 'dtmf' in route.config ? route.config.dtmf : undefined;
    const keypad =
      keypadCfg && keypadCfg.mode === 'text'
        ? new KeypadCollector(keypadCfg, (digits) => deliverKeypad(live.session, digits, call), call.log)
        : undefined;
    if (keypad) {
      call.on('dtmf', (d) => keypad.press(d));
      call.onEnd(() => keypad.stop());
    }
    call.onEnd(() => live.session?.close(call.endReason?.cause ?? 'ended'));
    call.onEnd(() => live.bridge?.stop());
    const attach = (session: AiSession): Bridge => {
      const b = new Bridge(call, leg, session, this.deps.clock, this.deps.hooks);
      live.session = session;
      live.bridge = b;
      call.media = { bridge: b, session };
      call.setTapSource(b);
      session.on('closed', (reason) => {
        if (live.session === session && !call.ended) void call.end({ by: 'ai', cause: 'ai_closed', detail: reason });
      });
      b.start();
      return b;
    };

    let apology = false;
    const session = this.deps
      .backendFor(route)
      .open({ callId: call.id, legFormat: leg.format, log: call.log, control });
    attach(session);
    const cfg = route.config;
    const timeoutMs = 'connectTimeoutMs' in cfg ? cfg.connectTimeoutMs : DEFAULT_CONNECT_TIMEOUT_MS;
    try {
      await startWithin(session, timeoutMs, call.id);
    } catch (err) {
      const detail = (err as Error).message;
      if (call.ended) throw asGatewayError(err, call.id);
      call.log.error({ err: detail, route: route.name, policy: cfg.onAiUnavailable }, 'AI unavailable before answer');
      if (cfg.onAiUnavailable !== 'apologise' || noApology) {
        await call.end({ by: 'error', cause: 'ai_connect_failed', detail, retryAfterSec: cfg.retryAfterSec });
        throw asGatewayError(err, call.id);
      }
      // Replace the AI with the spoken apology; the failed session is detached first so its close
      // does not end the call.
      live.bridge!.stop();
      live.session = undefined;
      await session.close('ai_unavailable');
      const stand = new ApologySession(leg.format, cfg.apologyText, control, call.log);
      attach(stand);
      await stand.start();
      apology = true;
    }
    const bridge = live.bridge!;
    let done = false;
    return {
      bridge,
      session: live.session!,
      route,
      apology,
      answered: () => {
        if (done || call.ended) return;
        done = true;
        if (call.state === 'ringing') call.transition('answered');
        call.transition('bridged');
        bridge.answered();
      },
    };
  }

  private requireRoute(name: string, callId: string) {
    const cfg = this.deps.router.routeConfig(name);
    if (!cfg) throw new GatewayError('not_found', `route "${name}" is not configured`, callId);
    return cfg;
  }
}

function transferConfig(route: RouteConfig) {
  return 'transfer' in route ? route.transfer : DEFAULT_TRANSFER;
}

/** Keypad input to the AI as one user message (backends that cannot take text just log it). */
function deliverKeypad(session: AiSession | undefined, digits: string, call: Call): void {
  if (!session) return;
  call.addTranscript({ role: 'caller', text: `[keypad] ${digits}`, at: Date.now() });
  if (session.sendText) session.sendText(keypadText(digits));
  else call.log.info({ digits }, 'keypad input not delivered: this AI backend takes no text input');
}

/** The send_dtmf tool: RFC 4733 digits on the caller's leg. */
function sendDigits(leg: MediaLeg, digits: string): { ok: boolean; detail: string } {
  if (!/^[0-9*#A-Da-d]{1,32}$/.test(digits)) return { ok: false, detail: 'digits must be 1 to 32 of 0-9, *, #, A-D' };
  if (!leg.sendDtmf) return { ok: false, detail: 'this call cannot send keypad tones' };
  for (const d of digits) {
    if (!leg.sendDtmf(d)) return { ok: false, detail: 'the far end did not agree to keypad tones (telephone-event)' };
  }
  return { ok: true, detail: `sent ${digits}` };
}

/** session.start(), bounded: a backend that hangs (DNS, TCP, an upgrade never answered) is given up on. */
async function startWithin(session: AiSession, timeoutMs: number, callId: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new GatewayError('ai_connect_failed', `AI not ready within ${timeoutMs} ms`, callId)),
      timeoutMs,
    );
  });
  const started = session.start();
  started.catch(() => {}); // a failure after the timeout has nobody left to tell
  try {
    await Promise.race([started, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function asGatewayError(err: unknown, callId: string): GatewayError {
  return err instanceof GatewayError
    ? err
    : new GatewayError('ai_connect_failed', (err as Error).message, callId, { cause: err });
}
