import { z } from 'zod';
import { isE164, isSipUri, isTelUri } from '../sip/header-values.js';

/** IPv4/IPv6 address or CIDR; validated structurally here, parsed by the SIP front. */
const cidr = z.string().regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'an IP address or CIDR like 196.12.0.0/16');

/** An optional secret: `${VAR:-}` with VAR unset yields "", which means "not configured". */
const optionalSecret = (min: number, what: string) =>
  z.preprocess((v) => (v === '' ? undefined : v), z.string().min(min, what).optional());

const codecName = z.enum(['PCMA', 'PCMU']);

export const trunkSchema = z.object({
  name: z.string().min(1),
  /** Source addresses allowed to send us INVITEs; anything else gets 403. */
  allow: z.array(cidr).min(1),
  auth: z.object({ realm: z.string().min(1), username: z.string().min(1), password: z.string().min(1) }).optional(),
  codecs: z.array(codecName).min(1).default(['PCMA', 'PCMU']),
  telephoneEvent: z.boolean().default(true),
  /** Country calling code used to normalise national numbers to E.164 (250 Rwanda, 356 Malta). */
  countryCode: z.string().regex(/^\d{1,3}$/),
  /** National trunk prefix stripped before adding the country code (0 in Rwanda; none in Malta). */
  nationalPrefix: z.string().regex(/^\d*$/).default(''),
  maxCalls: z.number().int().positive().default(30),
  route: z.string().optional(),
  /**
   * Where outbound calls (POST /v1/calls with front sip) go: a SIP URI without user part, e.g.
   * `sip:196.12.0.10:5060;transport=udp`; the called number becomes the user part. Default: the
   * first `allow` address, port 5060, UDP.
   */
  dialUri: z
    .string()
    .regex(/^sips?:[^@\s]+$/, 'a SIP URI without user part, like sip:196.12.0.10:5060;transport=udp')
    .optional(),
});

// ---- Transfers (issue 12): where the AI may send a call. ----
/** One allowed transfer destination: E.164 number, E.164 prefix ending in `*`, or a sip/sips/tel URI. */
const transferDestination = z
  .string()
  .refine(
    (v) => isE164(v) || /^\+\d{1,15}\*$/.test(v) || isSipUri(v) || isTelUri(v),
    'an E.164 number (+250788000000), a prefix ending in * (+25078*), or a sip:/tel: URI',
  );
/**
 * `transfer.allow`: the only destinations the model may transfer to (toll-fraud guard). Empty (the
 * default) means the route has no transfer_call tool. `transferTarget` is allowed too and is used
 * when the model names no destination.
 */
const transferPolicy = z.object({ allow: z.array(transferDestination).default([]) }).prefault({});

const turnDetection = z.union([
  z.object({
    type: z.literal('server_vad'),
    threshold: z.number().min(0).max(1).default(0.5),
    prefixPaddingMs: z.number().int().min(0).default(300),
    silenceDurationMs: z.number().int().min(0).default(500),
  }),
  z.object({ type: z.literal('semantic_vad'), eagerness: z.enum(['low', 'medium', 'high', 'auto']).default('auto') }),
  z.null(),
]);

export const httpToolSchema = z.object({
  name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/),
  description: z.string(),
  url: z.string().url(),
  parameters: z.record(z.string(), z.unknown()).default({ type: 'object', properties: {} }),
  timeoutMs: z.number().int().positive().default(5000),
});

const localRoute = z.object({
  kind: z.literal('local'),
  greeting: z.string().default('Hello, you are connected to the voice gateway. Say something and I will repeat it.'),
});

const realtimeRoute = z.object({
  kind: z.literal('realtime'),
  url: z.string().url().default('wss://api.openai.com/v1/realtime'),
  apiKey: z.string().min(1),
  model: z.string().default('gpt-realtime'),
  voice: z.string().default('marin'),
  instructions: z.string().default('You are a helpful voice assistant on a phone call. Be brief.'),
  turnDetection: turnDetection.default({
    type: 'server_vad',
    threshold: 0.5,
    prefixPaddingMs: 300,
    silenceDurationMs: 500,
  }),
  transcription: z.boolean().default(true),
  transferTarget: transferDestination.optional(),
  transfer: transferPolicy,
  tools: z.array(httpToolSchema).default([]),
  connectTimeoutMs: z.number().int().positive().default(10000),
});

const openaiSipRoute = z.object({
  kind: z.literal('openai-sip'),
  projectId: z.string().min(1),
  webhookSecret: z.string().min(1),
  apiKey: z.string().min(1),
  sipUri: z.string().optional(),
  apiBaseUrl: z.string().url().default('https://api.openai.com/v1'),
  model: z.string().default('gpt-realtime'),
  voice: z.string().default('marin'),
  instructions: z.string().default('You are a helpful voice assistant on a phone call. Be brief.'),
  /** Sideband WebSocket to the call (`?call_id=`): transcripts, tools, end_call. Audio stays on SIP. */
  sideband: z.boolean().default(true),
  realtimeUrl: z.string().url().default('wss://api.openai.com/v1/realtime'),
  /** Caller transcripts (input transcription, switched on over the sideband). */
  transcription: z.boolean().default(true),
  transferTarget: transferDestination.optional(),
  transfer: transferPolicy,
  tools: z.array(httpToolSchema).default([]),
  /** Sideband connect timeout; a sideband that never comes up leaves the call running without it. */
  connectTimeoutMs: z.number().int().positive().default(10000),
});

export const routeSchema = z.discriminatedUnion('kind', [localRoute, realtimeRoute, openaiSipRoute]);

export const ruleSchema = z.object({
  front: z.enum(['sip', 'whatsapp', 'api']).optional(),
  trunk: z.string().optional(),
  /** Called number: exact E.164, or a prefix ending in `*`. */
  to: z.string().optional(),
  route: z.string(),
});

export const configSchema = z
  .object({
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    http: z
      .object({
        host: z.string().default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(8080),
        // ---- HTTP hardening (issue 12): the public listener faces strangers. ----
        /** Whole request headers must arrive within this (slowloris). */
        headersTimeoutMs: z.number().int().positive().default(10_000),
        /** Whole request (headers and body) must arrive within this; slow bodies are cut (408). */
        requestTimeoutMs: z.number().int().positive().default(15_000),
        /** Idle keep-alive connections are closed after this. */
        keepAliveTimeoutMs: z.number().int().positive().default(5_000),
        /** Concurrent TCP connections per listener; beyond it new connections are dropped. */
        maxConnections: z.number().int().positive().default(512),
        /** Webhook bodies above this are refused (413) before any signature work. */
        maxWebhookBytes: z
          .number()
          .int()
          .positive()
          .default(64 * 1024),
      })
      .prefault({}),
    /**
     * Ops surface (/v1, /metrics, dashboard, OpenAPI). Without `port` it shares the public listener
     * (then /metrics needs the token too); with `port` it gets its own listener on `host`
     * (loopback by default) and the public listener serves only webhooks and health checks.
     */
    ops: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).optional(),
      })
      .prefault({}),
    api: z
      .object({
        token: optionalSecret(16, 'a token of at least 16 characters'),
        /** Concurrent Server-Sent Event streams; more get 503. */
        sseMaxClients: z.number().int().positive().default(32),
        /** A stream whose unsent backlog exceeds this (a slow consumer) is dropped. */
        sseMaxBufferedBytes: z
          .number()
          .int()
          .positive()
          .default(256 * 1024),
        /** Lifetime of a dashboard session cookie (exchanged once for the token). */
        sessionTtlSec: z
          .number()
          .int()
          .positive()
          .default(8 * 3600),
      })
      .prefault({}),
    sip: z
      .object({
        enabled: z.boolean().default(true),
        engine: z.enum(['embedded', 'drachtio']).default('embedded'),
        host: z.string().default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(5060),
        /** Address written into Contact/SDP; the public IP when behind NAT. */
        publicAddress: z.string().default('127.0.0.1'),
        rtpPortMin: z.number().int().min(1024).max(65534).default(20000),
        rtpPortMax: z.number().int().min(1025).max(65535).default(20999),
        rtpTimeoutSec: z.number().positive().default(15),
        /** RFC 4028 Min-SE: shorter Session-Expires get 422. 90 s is the RFC's floor. */
        minSessionExpiresSec: z.number().int().positive().default(90),
        drachtio: z.object({ host: z.string(), port: z.number().int(), secret: z.string() }).optional(),
        /**
         * SIP over TLS (embedded engine). A listener on `port` when `cert` and `key` (PEM file paths)
         * are set; dialing `transport=tls`/`sips:` URIs (OpenAI's SIP endpoint) works without them.
         * `ca` adds trust for outbound connections on top of the system CAs; `verifyServer: false`
         * accepts any server certificate (labs only).
         */
        tls: z
          .object({
            port: z.number().int().min(0).max(65535).default(5061),
            cert: z.string().min(1).optional(),
            key: z.string().min(1).optional(),
            ca: z.string().min(1).optional(),
            verifyServer: z.boolean().default(true),
          })
          .refine((t) => !t.cert === !t.key, { message: 'sip.tls.cert and sip.tls.key go together' })
          .optional(),
      })
      .prefault({}),
    trunks: z.array(trunkSchema).default([]),
    whatsapp: z
      .object({
        enabled: z.boolean().default(false),
        phoneNumberId: z.string().default(''),
        accessToken: z.string().default(''),
        appSecret: z.string().default(''),
        verifyToken: z.string().default(''),
        graphBaseUrl: z.string().url().default('https://graph.facebook.com'),
        graphVersion: z
          .string()
          .regex(/^v\d+\.\d+$/)
          .default('v23.0'),
        publicIp: z.string().default('127.0.0.1'),
        udpPortMin: z.number().int().default(30000),
        udpPortMax: z.number().int().default(30999),
        mediaTimeoutSec: z.number().positive().default(15),
        /** Once media has flowed, end the call after this long with no RTP from WhatsApp. */
        rtpTimeoutSec: z.number().positive().default(15),
      })
      .prefault({}),
    records: z
      .object({
        /** SQLite file for call records (`:memory:` keeps them only while running). */
        path: z.string().default('data/calls.sqlite'),
        /** Stereo WAV per call, caller left / AI right. Off by default. */
        recordAudio: z.boolean().default(false),
        recordingsDir: z.string().default('data/recordings'),
      })
      .prefault({}),
    shutdown: z.object({ drainSec: z.number().min(0).default(30) }).prefault({}),
    // ---- Caps (issue 12): nothing a stranger starts may grow without bound. ----
    limits: z
      .object({
        /** Concurrent calls per front beyond per-trunk SIP `maxCalls`; more are refused (Graph reject / 503). */
        maxCalls: z
          .object({
            /** All WhatsApp calls at once (inbound, dial-out and media sessions). */
            whatsapp: z.number().int().positive().default(100),
            /** Of which business-initiated (POST /v1/calls front whatsapp). */
            whatsappOutbound: z.number().int().positive().default(20),
            /** Media-only sessions (POST /v1/sessions/start). */
            mediaSessions: z.number().int().positive().default(100),
          })
          .prefault({}),
        /** Longest a call may last from its arrival; then the AI says `goodbye` and the call ends. */
        maxCallDurationSec: z
          .number()
          .positive()
          .default(4 * 3600),
        goodbye: z.string().default('We have reached the time limit for this call. Thank you for calling, goodbye.'),
        /** Transcript lines and tool calls kept per call (oldest dropped, counted). */
        maxTranscriptEntries: z.number().int().positive().default(500),
        maxToolCalls: z.number().int().positive().default(100),
      })
      .prefault({}),
    routes: z.record(z.string(), routeSchema).prefault({ local: { kind: 'local' } }),
    routing: z.object({ default: z.string().default('local'), rules: z.array(ruleSchema).default([]) }).prefault({}),
  })
  .superRefine((cfg, ctx) => {
    const known = new Set(Object.keys(cfg.routes));
    const check = (route: string | undefined, path: (string | number)[]) => {
      if (route !== undefined && !known.has(route)) {
        ctx.addIssue({
          code: 'custom',
          path,
          message: `unknown route "${route}" (routes: ${[...known].join(', ')})`,
          input: route,
        });
      }
    };
    check(cfg.routing.default, ['routing', 'default']);
    cfg.routing.rules.forEach((r, i) => check(r.route, ['routing', 'rules', i, 'route']));
    cfg.trunks.forEach((t, i) => check(t.route, ['trunks', i, 'route']));
    if (cfg.sip.rtpPortMin >= cfg.sip.rtpPortMax) {
      ctx.addIssue({
        code: 'custom',
        path: ['sip', 'rtpPortMax'],
        message: 'must be above rtpPortMin',
        input: cfg.sip.rtpPortMax,
      });
    }
    if (cfg.whatsapp.enabled) {
      for (const k of ['phoneNumberId', 'accessToken', 'appSecret', 'verifyToken'] as const) {
        if (!cfg.whatsapp[k])
          ctx.addIssue({ code: 'custom', path: ['whatsapp', k], message: 'required when whatsapp.enabled', input: '' });
      }
    }
  });

export type GatewayConfig = z.infer<typeof configSchema>;
export type TrunkConfig = z.infer<typeof trunkSchema>;
export type RouteConfig = z.infer<typeof routeSchema>;
export type RealtimeRouteConfig = z.infer<typeof realtimeRoute>;
export type LocalRouteConfig = z.infer<typeof localRoute>;
export type OpenAiSipRouteConfig = z.infer<typeof openaiSipRoute>;
export type HttpToolConfig = z.infer<typeof httpToolSchema>;
export type RoutingRule = z.infer<typeof ruleSchema>;
