import type { OpenAiSipRouteConfig } from '../../config/schema.js';
import type { GatewayContext } from '../../gateway.js';
import { OpenAiSipBackend } from './backend.js';
import { acceptForwardedIncoming, forwardIncoming, type LocalMatcher } from './cluster-forwarding.js';
import { MemoryOnceStore, type OnceStore } from './once-store.js';
import { DELIVERY_MEMORY_MS, openAiWebhookRouter } from './webhook.js';

/**
 * Finds which of this gateway's calls an OpenAI incoming call belongs to, and accepts it: each
 * route's backend is asked (matched by our X- header). Across instances the dialing one owns the call
 * in cluster state and the receiving one forwards the event to it (cluster-forwarding.ts).
 */
export type IncomingCallMatcher = LocalMatcher;

/**
 * Sets up every `openai-sip` route's backend (dialing through ctx.legDialer), and one webhook per
 * OpenAI project at /webhooks/openai/<projectId> — OpenAI sends a project's events to every endpoint
 * of the project, so routes on one project share one endpoint and one matcher. Each route's own
 * /webhooks/openai/<route> stays mounted on its project's endpoint so existing settings keep working.
 * An incoming call we did not dial is left alone (`unmatched: ignore`) or refused (`reject`).
 */
export function installOpenAiSip(ctx: GatewayContext, deliveries: OnceStore = new MemoryOnceStore()): void {
  const projects = new Map<string, { names: string[]; routes: OpenAiSipRouteConfig[]; backends: OpenAiSipBackend[] }>();
  for (const [name, route] of Object.entries(ctx.config.routes)) {
    if (route.kind !== 'openai-sip') continue;
    const backend = new OpenAiSipBackend(
      route,
      { clock: ctx.clock, log: ctx.log.child({ route: name }), dialer: () => ctx.legDialer },
      (id) => ctx.registry.get(id),
    );
    ctx.backends.bind(name, backend);
    const p = projects.get(route.projectId) ?? { names: [], routes: [], backends: [] };
    p.names.push(name);
    p.routes.push(route);
    p.backends.push(backend);
    projects.set(route.projectId, p);
  }
  for (const [projectId, p] of projects) {
    const log = ctx.log.child({ openaiProject: projectId });
    const matcher: IncomingCallMatcher = {
      owns: (event) => p.backends.some((b) => b.owns(event)),
      deliver: async (event) => {
        for (const b of p.backends) if (await b.handleIncoming(event)) return true;
        return false;
      },
    };
    acceptForwardedIncoming(ctx, projectId, matcher, log);
    const unmatched = p.routes[0]!.unmatched;
    const router = openAiWebhookRouter({
      secrets: p.routes.map((r) => r.webhookSecret),
      log,
      deliveries,
      onRejected: (reason) => ctx.metrics.webhookRejections.inc({ source: 'openai', reason: reason.split(':')[0]! }),
      onIncoming: async (event) => {
        const openAiCallId = event.data.call_id;
        // The same call announced twice (two endpoints of the project, fresh webhook ids): act once.
        if (!(await deliveries.claim(`openai-call:${openAiCallId}`, DELIVERY_MEMORY_MS))) {
          log.info({ openAiCallId }, 'OpenAI call already handled: event ignored');
          return;
        }
        if (await matcher.deliver(event)) return;
        if (await forwardIncoming(ctx, projectId, event, log)) return;
        if (unmatched === 'ignore') {
          log.info({ openAiCallId }, 'OpenAI call matches no call of this gateway: left alone');
          return;
        }
        log.warn({ openAiCallId }, 'OpenAI call matches no call of this gateway: rejecting');
        await p.backends[0]!.api.reject(openAiCallId, 603);
      },
    });
    const paths = [...new Set([projectId, ...p.names])].map((n) => `/webhooks/openai/${n}`);
    for (const path of paths) ctx.app.use(path, router);
    log.info({ webhook: paths[0], aliases: paths.slice(1), routes: p.names, unmatched }, 'OpenAI SIP project ready');
  }
}
