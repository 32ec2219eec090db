import { z } from 'zod';
import { cidr, optionalSecret } from './schema-common.js';
import { checkCluster, checkOpenAiProjects, checkWhatsApp } from './schema-checks.js';
import { routeSchema, whatsappNumberSchema } from './route-schema.js';
import { trunkSchema } from './trunk-schema.js';

// The config's parts live beside this file (trunks, routes, cross-field checks); their types are
// re-exported here so the rest of the code imports config types from one place.
export * from './route-schema.js';
export * from './trunk-schema.js';

export const ruleSchema = z.object({
  front: z.enum(['sip', 'whatsapp', 'api', 'browser']).optional(),
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
        /** How often the console's system page figures are sampled (calls, late frames, CPU, memory). */
        systemSampleMs: z.number().int().min(100).default(5000),
        /** Samples kept for the system page (720 × 5 s = one hour); older ones are dropped. */
        systemSamples: z.number().int().min(10).max(100_000).default(720),
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
        /**
         * Address written into Contact/SDP; the public IP when behind NAT. Unset: learnt from a
         * registration trunk's registrar (Via received, RFC 3581), else 127.0.0.1.
         */
        publicAddress: z.string().optional(),
        /** IPv6 address for our SDP when a carrier offers IPv6 media (IN IP6); unset: such offers get 488. */
        publicAddress6: z.string().regex(/:/, 'an IPv6 address').optional(),
        rtpPortMin: z.number().int().min(1024).max(65534).default(20000),
        rtpPortMax: z.number().int().min(1025).max(65535).default(20999),
        rtpTimeoutSec: z.number().positive().default(15),
        /** RFC 4028 Min-SE: shorter Session-Expires get 422. 90 s is the RFC's floor. */
        minSessionExpiresSec: z.number().int().positive().default(90),
        /**
         * sip.engine drachtio: the drachtio-server control connection (admin port and secret). Calls
         * in progress keep their media for linkGraceSec while that connection is down, then end.
         */
        drachtio: z
          .object({
            host: z.string(),
            port: z.number().int(),
            secret: z.string(),
            linkGraceSec: z.number().positive().default(30),
          })
          .optional(),
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
        /**
         * Flood resistance (embedded engine). Requests from addresses no trunk allows (outside a
         * dialog) get one stateless 403 (`reject`) or no answer at all (`drop`), before any state.
         */
        unknownSource: z.enum(['reject', 'drop']).default('reject'),
        /** Per-source request rates (burst: twice the rate) and caps on what the engine holds. */
        limits: z
          .object({
            invitePerSec: z.number().positive().default(50),
            registerPerSec: z.number().positive().default(10),
            optionsPerSec: z.number().positive().default(20),
            maxServerTransactions: z.number().int().positive().default(10_000),
            maxDialogs: z.number().int().positive().default(5_000),
            maxConnections: z.number().int().positive().default(1000),
            connectionIdleSec: z.number().positive().default(300),
            maxMessageBytes: z
              .number()
              .int()
              .min(4096)
              .default(64 * 1024),
          })
          .prefault({}),
        // ---- Scale-out (issue 14): trunk identity from the edge proxy. ----
        /**
         * SIP proxies (Kamailio, config/kamailio/kamailio.cfg) that check carrier addresses at the
         * edge and name the trunk in X-Gateway-Trunk, the carrier's address in X-Gateway-Source. Only
         * INVITEs from these addresses have those headers believed (and the named trunk must still
         * allow that carrier address); from anywhere else they are ignored.
         */
        trustedProxies: z.array(cidr).default([]),
      })
      .prefault({}),
    trunks: z.array(trunkSchema).default([]),
    whatsapp: z
      .object({
        enabled: z.boolean().default(false),
        /** Single-number form (kept for existing configs); `numbers` is the general one. */
        phoneNumberId: z.string().default(''),
        /** The single number's own number (digits or E.164), used as `from` on outbound calls. */
        displayNumber: z.string().default(''),
        /** Business numbers served by this gateway; webhooks for other numbers are ignored. */
        numbers: z.array(whatsappNumberSchema).default([]),
        accessToken: z.string().default(''),
        appSecret: z.string().default(''),
        verifyToken: z.string().default(''),
        graphBaseUrl: z.string().url().default('https://graph.facebook.com'),
        graphVersion: z
          .string()
          .regex(/^v\d+\.\d+$/)
          .default('v23.0'),
        /** One Graph request's deadline; connect/accept are not repeated after it (see graph.ts). */
        graphTimeoutMs: z.number().int().positive().default(8000),
        /** The address Meta reaches our ICE candidates on (this host's public IP). Required when enabled. */
        publicIp: z.string().default(''),
        udpPortMin: z.number().int().default(30000),
        udpPortMax: z.number().int().default(30999),
        mediaTimeoutSec: z.number().positive().default(15),
        /** Once media has flowed, end the call after this long with no RTP from WhatsApp. */
        rtpTimeoutSec: z.number().positive().default(15),
      })
      .prefault({}),
    // ---- Browser phone (issue 16): SIP over WebSocket (RFC 7118) + a WebRTC leg, front `browser`. ----
    browser: z
      .object({
        /** Accept SIP over WebSocket on the ops listener under /sip (embedded SIP engine). */
        enabled: z.boolean().default(true),
        /** Browser calls at once; more get 486. */
        maxCalls: z.number().int().positive().default(4),
        /** WebSocket connections at once under /sip; more are refused (503) at the upgrade. */
        maxConnections: z.number().int().positive().default(32),
        /** The address browsers reach our ICE candidate on (this host as the browser sees it). */
        publicIp: z.string().default('127.0.0.1'),
        udpPortMin: z.number().int().min(1024).default(31000),
        udpPortMax: z.number().int().max(65535).default(31099),
        /** Once media has flowed, end the call after this long with no RTP from the browser. */
        rtpTimeoutSec: z.number().positive().default(15),
        /** ICE + DTLS must complete within this after the 200 OK. */
        mediaTimeoutSec: z.number().positive().default(15),
        /** Operators listening in on one call at once (console listen-in); more get 486. */
        maxListenersPerCall: z.number().int().min(0).max(16).default(2),
      })
      .prefault({}),
    records: z
      .object({
        /** SQLite file for call records (`:memory:` keeps them only while running). */
        path: z.string().default('data/calls.sqlite'),
        /** Stereo WAV per call, caller left / AI right. Off by default. */
        recordAudio: z.boolean().default(false),
        recordingsDir: z.string().default('data/recordings'),
        /** Issue 14: one history for every instance. Set to write and read records in PostgreSQL instead of `path`. */
        postgres: z
          .object({
            url: z
              .string()
              .regex(/^postgres(ql)?:\/\//, 'a postgres:// URL (secrets as ${VAR})')
              .optional(),
          })
          .prefault({}),
      })
      .prefault({}),
    shutdown: z.object({ drainSec: z.number().min(0).default(30) }).prefault({}),
    // ---- Scale-out (issue 14): shared state, so several gateways act as one. ----
    cluster: z
      .object({
        /** This instance's name in shared state (default: hostname-pid). Unique per running process. */
        instanceId: z
          .string()
          .regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, . _ - (at most 64)')
          .optional(),
        /** Base URL the other instances reach this one's ops listener on (REST + webhook forwarding). */
        advertiseUrl: z.string().url().optional(),
        /** Shared secret between instances for forwarded webhooks and API calls (x-cluster-secret). */
        secret: optionalSecret(16, 'a secret of at least 16 characters'),
        /** How often an instance refreshes its calls in Redis. */
        heartbeatSec: z.number().positive().default(2),
        /** A call (or instance) not refreshed for this long is gone: a killed instance's calls stop counting. */
        ttlSec: z.number().positive().default(10),
        /** Set to share state in Redis; unset = in-process (one gateway, nothing else to run). */
        redis: z
          .object({
            url: z
              .string()
              .regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL')
              .optional(),
            keyPrefix: z.string().default('gw:'),
            /** One command's deadline: a call set-up gets 503 rather than waiting on a dead Redis. */
            commandTimeoutMs: z.number().int().positive().default(500),
          })
          .prefault({}),
      })
      .prefault({}),
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
        /** SIP messages kept per call for its ladder (the first ones, and the last). */
        maxSignallingMessages: z.number().int().positive().default(200),
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
    cfg.trunks.forEach((t, i) => {
      const match = t.match ?? (t.register ? 'both' : 'ip');
      if (match !== 'ip' && !t.register)
        ctx.addIssue({
          code: 'custom',
          path: ['trunks', i, 'match'],
          message: 'needs trunks[].register',
          input: match,
        });
      if (match === 'ip' && t.allow.length === 0)
        ctx.addIssue({
          code: 'custom',
          path: ['trunks', i, 'allow'],
          message: 'at least one address (or a register block with match registration/both)',
          input: t.allow,
        });
    });
    if (cfg.sip.rtpPortMin >= cfg.sip.rtpPortMax) {
      ctx.addIssue({
        code: 'custom',
        path: ['sip', 'rtpPortMax'],
        message: 'must be above rtpPortMin',
        input: cfg.sip.rtpPortMax,
      });
    }
    if (cfg.whatsapp.enabled) checkWhatsApp(cfg.whatsapp, ctx);
    cfg.whatsapp.numbers.forEach((n, i) => check(n.route, ['whatsapp', 'numbers', i, 'route']));
    checkOpenAiProjects(cfg.routes, ctx);
    checkCluster(cfg.cluster, ctx);
  });

export type GatewayConfig = z.infer<typeof configSchema>;
export type RoutingRule = z.infer<typeof ruleSchema>;
export type ClusterConfig = GatewayConfig['cluster'];
