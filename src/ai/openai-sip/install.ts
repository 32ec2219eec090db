import type { OpenAiSipRouteConfig } from '../../config/schema.js';
import type { GatewayContext } from '../../gateway.js';
import { OpenAiSipBackend } from './backend.js';
import { openAiWebhookRouter } from './webhook.js';

/**
 * Sets up every `openai-sip` route: its backend (dialing through ctx.legDialer) and its webhook at
 * /webhooks/openai/<route>, which is the URL to configure in the OpenAI project's webhook settings.
 * A `realtime.call.incoming` that matches none of our pending calls is rejected.
 */
export function installOpenAiSip(ctx: GatewayContext): void {
  for (const [name, route] of Object.entries(ctx.config.routes)) {
    if (route.kind !== 'openai-sip') continue;
    const log = ctx.log.child({ route: name });
    const backend = new OpenAiSipBackend(
      route as OpenAiSipRouteConfig,
      { clock: ctx.clock, log, dialer: () => ctx.legDialer },
      (id) => ctx.registry.get(id),
    );
    ctx.backends.bind(name, backend);
    ctx.app.use(
      `/webhooks/openai/${name}`,
      openAiWebhookRouter({
        secret: route.webhookSecret,
        log,
        onRejected: (reason) => ctx.metrics.webhookRejections.inc({ source: 'openai', reason: reason.split(':')[0]! }),
        onIncoming: async (event) => {
          if (await backend.handleIncoming(event)) return;
          log.warn({ openAiCallId: event.data.call_id }, 'OpenAI call matches no pending call: rejecting');
          await backend.api.reject(event.data.call_id, 603);
        },
      }),
    );
    log.info({ webhook: `/webhooks/openai/${name}`, sipUri: backend.sipUri }, 'OpenAI SIP route ready');
  }
}
