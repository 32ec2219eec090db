import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import { FORWARDED_HEADER, peerAuthentic } from '../cluster/peers.js';
import { transferModeSchema } from '../config/schema.js';
import type { Call } from '../core/call.js';
import { TransferPolicy } from '../core/transfer-policy.js';
import type { GatewayContext } from '../gateway.js';
import { isIdentityUser, isSipUri, isTelUri, normaliseDestination } from '../sip/header-values.js';
import { OpsAuth } from './auth.js';
import { callView } from './call-view.js';
import { clusterRoutes } from './cluster-routes.js';
import { sendError, statusOf, zodMessage } from './errors.js';
import { openApiDocument } from './openapi.js';
import { SseHub, streamAllCalls, streamCall } from './sse.js';

const DASHBOARD = readFileSync(new URL('./dashboard.html', import.meta.url), 'utf8');
const nodeModule = (path: string) => fileURLToPath(new URL(`../../node_modules/${path}`, import.meta.url));
const CONSOLE_FILES: [string, string][] = [
  ['/console', fileURLToPath(new URL('./console', import.meta.url))],
  ['/vendor/sip.js', nodeModule('sip.js/lib')],
  ['/vendor/uplot', nodeModule('uplot/dist')],
];

const listQuery = z.object({
  state: z.enum(['ringing', 'answered', 'bridged', 'ended']).optional(),
  front: z.enum(['sip', 'whatsapp', 'api', 'browser', 'test']).optional(),
  trunk: z.string().optional(),
  ended: z.enum(['true', 'false']).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  // History search (ended calls, from the SQLite records).
  number: z.string().max(64).optional(),
  route: z.string().max(64).optional(),
  outcome: z.string().max(64).optional(),
  since: z.coerce.date().optional(),
  until: z.coerce.date().optional(),
  offset: z.coerce.number().int().min(0).max(1_000_000).optional(),
});
const hangupBody = z.object({ reason: z.string().max(200).optional() }).strict();
const transferBody = z
  .object({
    destination: z.string().min(1).max(256),
    mode: transferModeSchema.optional(),
    trunk: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'a configured trunk name')
      .optional(),
    brief: z.string().min(1).max(500).optional(),
  })
  .strict();
const sayBody = z.object({ text: z.string().min(1).max(2000) }).strict();
const muteBody = z.object({ muted: z.boolean() }).strict();
const dialBody = z
  .object({
    front: z.enum(['whatsapp', 'sip']),
    to: z.string().regex(/^\+?\d{6,15}$/, 'a phone number in E.164'),
    from: z
      .string()
      .max(256)
      .refine((v) => isIdentityUser(v) || isSipUri(v) || isTelUri(v), 'a number, SIP user or sip:/tel: URI')
      .optional(),
    trunk: z.string().optional(),
    route: z.string().optional(),
  })
  .strict();
const sessionBody = z
  .object({
    callId: z.string().min(1).max(200),
    sdpOffer: z.string().min(10).startsWith('v=0'),
    fromNumber: z.string().min(1),
    toNumber: z.string().min(1),
    route: z.string().optional(),
  })
  .strict();

function parse<T>(schema: z.ZodType<T>, value: unknown, res: Response): T | undefined {
  const r = schema.safeParse(value ?? {});
  if (!r.success) {
    sendError(res, 400, 'invalid_request', zodMessage(r.error));
    return undefined;
  }
  return r.data;
}

/** Where the ops surface is served: its own listener (`ops.port`), or the public one. */
export interface OpsMount {
  /** The public app: webhooks and health checks always live here. */
  publicApp: express.Express;
  /** The ops app: the public app itself when there is no separate ops listener. */
  opsApp: express.Express;
}

/** Health, metrics, dashboard and the /v1 call-control API. Returns the SSE hub (closed on drain). */
export function mountOps(
  ctx: GatewayContext,
  mount: OpsMount,
  ready: () => { ok: boolean; checks: Record<string, boolean> },
): SseHub {
  const { registry, metrics, config } = ctx;
  const records = ctx.history;
  const { publicApp, opsApp: app } = mount;
  const shared = publicApp === app;
  const auth = new OpsAuth(config.api.token, config.api.sessionTtlSec * 1000, ctx.localAccess);
  const sse = new SseHub(config.api.sseMaxClients, config.api.sseMaxBufferedBytes, ctx.log);

  for (const a of shared ? [app] : [publicApp, app]) {
    a.get('/healthz', (_req, res) => {
      res.json({ status: 'ok', ...(a === app ? { calls: registry.size } : {}) });
    });
    a.get('/readyz', (_req, res) => {
      const r = ready();
      // Registration state is a detail, not a readiness gate: one carrier's registrar being down must
      // not take the gateway (and its other trunks) out of the load balancer. Ops listener only.
      const registrations =
        a === app
          ? ctx.trunks?.().flatMap((t) =>
              t.registration
                ? [
                    {
                      trunk: t.name,
                      state: t.registration.state,
                      lastStatus: t.registration.lastStatus,
                      nextAttemptAt: t.registration.nextAttemptAt,
                    },
                  ]
                : [],
            )
          : undefined;
      res
        .status(r.ok && !ctx.draining ? 200 : 503)
        .json({ ...r, draining: ctx.draining, ...(registrations?.length ? { registrations } : {}) });
    });
  }
  // Call volumes per trunk are business data: behind the token when on the public listener.
  const metricsGuard: express.RequestHandler[] = shared ? [auth.require] : [];
  app.get('/metrics', ...metricsGuard, async (_req, res) => {
    res.set('Content-Type', metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.get('/', (_req, res) => {
    res.type('html').send(DASHBOARD);
  });
  // The console's scripts and the libraries it uses, served from node_modules (no CDN, no build step).
  for (const [prefix, dir] of CONSOLE_FILES) app.use(prefix, express.static(dir, { fallthrough: false, index: false }));
  app.get('/v1/openapi.json', (_req, res) => {
    res.json(openApiDocument);
  });

  const v1 = express.Router();
  v1.post('/auth/session', auth.exchange);
  v1.delete('/auth/session', auth.logout);
  v1.post('/auth/login', express.json({ limit: '1kb' }), auth.login);
  // Another instance forwarding an operator's request (cluster.secret) acts with the operator's authority.
  v1.use((req, res, next) => (peerAuthentic(req, config.cluster.secret) ? next() : auth.require(req, res, next)));
  v1.use(express.json({ limit: '64kb' }));
  const cluster = clusterRoutes(ctx, (req) => !!req.get(FORWARDED_HEADER));
  v1.use('/calls/:id', cluster.toOwner);

  const live = (req: Request, res: Response): Call | undefined => {
    const call = registry.get(String(req.params.id));
    if (!call) sendError(res, 404, 'not_found', `no active call ${String(req.params.id)}`);
    return call;
  };

  v1.get('/calls', async (req, res) => {
    const q = parse(listQuery, req.query, res);
    if (!q) return;
    if (q.ended === 'true' || q.state === 'ended') {
      const { since, until, ...rest } = q;
      const calls = await records.list({ ...rest, since: since?.getTime(), until: until?.getTime() });
      res.json({ calls, offset: q.offset ?? 0, limit: q.limit ?? 100 });
      return;
    }
    const calls = registry.list({ state: q.state, front: q.front, trunk: q.trunk }).slice(0, q.limit ?? 1000);
    if (cluster.wanted(req)) return void res.json(await cluster.listAll(req, calls.map(callView), q.limit ?? 1000));
    res.json({ calls: calls.map(callView) });
  });

  // The console's system page: the gateway's own figures over time (see SystemSampler).
  v1.get('/system/series', (_req, res) => {
    res.json(ctx.system.series());
  });

  v1.get('/calls/:id', async (req, res) => {
    const call = registry.get(req.params.id);
    const view = call ? callView(call) : await records.get(req.params.id);
    if (!view) return sendError(res, 404, 'not_found', `no call ${req.params.id}`);
    res.json(view);
  });

  // The call's stereo WAV (records.recordAudio), behind auth; express's sendFile answers Range
  // requests (206), so the console's player can seek without downloading the whole file.
  v1.get('/calls/:id/recording', (req, res) => {
    const id = String(req.params.id);
    if (!/^[0-9a-f-]{36}$/i.test(id)) return sendError(res, 400, 'invalid_request', 'not a call id');
    if (!config.records.recordAudio) return sendError(res, 404, 'not_found', 'recording is off (records.recordAudio)');
    res.sendFile(`${id}.wav`, { root: resolve(config.records.recordingsDir), dotfiles: 'deny' }, (err) => {
      if (err && !res.headersSent) sendError(res, 404, 'not_found', `no recording for call ${id}`);
    });
  });

  v1.delete('/calls/:id', async (req, res) => {
    const body = parse(hangupBody, req.body, res);
    if (!body) return;
    const call = live(req, res);
    if (!call) return;
    await call.end({ by: 'operator', cause: 'api_hangup', detail: body.reason });
    res.json(callView(call));
  });

  v1.post('/calls/:id/transfer', async (req, res) => {
    const body = parse(transferBody, req.body, res);
    if (!body) return;
    const call = live(req, res);
    if (!call) return;
    const destination = normaliseDestination(body.destination);
    if (!destination)
      return sendError(
        res,
        400,
        'invalid_request',
        'destination: an E.164 number, a sip:/sips:/tel: URI or whatsapp:+<number>',
      );
    if (body.trunk && !config.trunks.some((t) => t.name === body.trunk))
      return sendError(res, 400, 'invalid_request', `trunk: no trunk "${body.trunk}"`);
    const route = call.route ? config.routes[call.route] : undefined;
    const transfer = route && 'transfer' in route ? route.transfer : undefined;
    const policy = new TransferPolicy(
      transfer?.allow ?? [],
      route && 'transferTarget' in route ? route.transferTarget : undefined,
    );
    if (!policy.check(destination).ok) {
      // Operator authority beyond the allow-list only where the route says so; logged loudly either
      // way so a leaked token shows up in the logs (README "Security").
      if (!transfer?.operatorOverride) {
        call.log.warn({ destination, route: call.route }, 'operator transfer refused: not in the route transfer list');
        return sendError(res, 403, 'not_allowed', "destination is not in the route's transfer.allow list");
      }
      call.log.warn({ destination, route: call.route }, 'operator transfer outside the route transfer list');
    }
    if (!call.handoff) return sendError(res, 409, 'not_bridged', 'the call is not connected yet');
    const r = await call.handoff({
      destination,
      mode: body.mode,
      trunk: body.trunk,
      brief: body.brief,
      by: 'operator',
    });
    if (!r.ok) {
      const code = r.outcome === 'unsupported' ? 'unsupported' : 'transfer_failed';
      return sendError(res, 409, code, r.detail, { outcome: r.outcome });
    }
    res.json({ ok: true, destination, outcome: r.outcome, detail: r.detail });
  });

  v1.post('/calls/:id/say', (req, res) => {
    const body = parse(sayBody, req.body, res);
    if (!body) return;
    const call = live(req, res);
    if (!call) return;
    const session = call.media?.session;
    if (!session?.say) return sendError(res, 409, 'not_bridged', 'the call has no AI session that can speak');
    session.say(body.text);
    res.json({ ok: true });
  });

  v1.post('/calls/:id/mute', (req, res) => {
    const body = parse(muteBody, req.body, res);
    if (!body) return;
    const call = live(req, res);
    if (!call) return;
    if (!call.media) return sendError(res, 409, 'not_bridged', 'the call is not bridged yet');
    call.media.bridge.muted = body.muted;
    call.log.info({ muted: body.muted }, 'caller audio to AI muted/unmuted by operator');
    res.json({ ok: true, muted: body.muted });
  });

  v1.post('/calls', async (req, res) => {
    const body = parse(dialBody, req.body, res);
    if (!body) return;
    if (ctx.draining) {
      // Draining: a live instance of the cluster places it instead, when there is one.
      if (cluster.wanted(req) && (await cluster.placeElsewhere(req, res, body))) return;
      return sendError(res, 503, 'draining', 'the gateway is shutting down');
    }
    if (body.route && !config.routes[body.route])
      return sendError(res, 400, 'invalid_request', `route: unknown route "${body.route}"`);
    const dial = ctx.dialers.get(body.front);
    if (!dial) return sendError(res, 501, 'unsupported', `outbound ${body.front} calls are not enabled`);
    const call = await dial(body);
    res.status(201).json(callView(call));
  });

  v1.get('/calls/:id/events', (req, res) => {
    const call = live(req, res);
    if (call) streamCall(sse, call, req, res);
  });
  v1.get('/events', (req, res) => streamAllCalls(sse, registry, req, res, cluster.remoteCalls(req)));

  v1.get('/routes', (_req, res) => {
    const routes = Object.entries(config.routes).map(([name, r]) => ({
      name,
      kind: r.kind,
      default: name === config.routing.default,
    }));
    res.json({ routes });
  });
  v1.get('/trunks', async (req, res) => {
    const trunks = ctx.trunks?.() ?? [];
    res.json(cluster.wanted(req) ? await cluster.trunksAll(trunks) : { trunks });
  });

  v1.post('/sessions/start', async (req, res) => {
    const body = parse(sessionBody, req.body, res);
    if (!body) return;
    if (!ctx.mediaSessions) return sendError(res, 501, 'unsupported', 'WhatsApp media sessions are not enabled');
    if (ctx.draining) return sendError(res, 503, 'draining', 'the gateway is shutting down');
    const { sdpAnswer, call } = await ctx.mediaSessions.start(body);
    res.status(201).json({ sdpAnswer, gatewayCallId: call.id });
  });
  v1.post('/sessions/:callId/stop', async (req, res) => {
    if (!ctx.mediaSessions) return sendError(res, 501, 'unsupported', 'WhatsApp media sessions are not enabled');
    const stopped = await ctx.mediaSessions.stop(req.params.callId);
    if (!stopped) return sendError(res, 404, 'not_found', `no media session ${req.params.callId}`);
    res.json({ ok: true });
  });

  v1.use((_req, res) => sendError(res, 404, 'not_found', 'no such endpoint'));
  // Express 5 forwards rejected promises here; body-parser errors carry a status.
  v1.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const e = err as { status?: number; type?: string; message?: string };
    if (e.type === 'entity.parse.failed') return sendError(res, 400, 'invalid_json', 'request body is not valid JSON');
    if (e.type === 'entity.too.large') return sendError(res, 413, 'too_large', 'request body too large');
    const s = statusOf(err);
    if (s.status >= 500) ctx.log.error({ err: e.message }, 'API request failed');
    sendError(res, s.status, s.code, s.message, s.details);
  });
  app.use('/v1', v1);
  return sse;
}
