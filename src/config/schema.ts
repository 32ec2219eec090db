import { z } from 'zod';

/** IPv4/IPv6 address or CIDR; validated structurally here, parsed by the SIP front. */
const cidr = z.string().regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'an IP address or CIDR like 196.12.0.0/16');

/** An optional secret: `${VAR:-}` with VAR unset yields "", which means "not configured". */
const optionalSecret = (min: number, what: string) =>
  z.preprocess((v) => (v === '' ? undefined : v), z.string().min(min, what).optional());

const codecName = z.enum(['PCMA', 'PCMU']);

/** A value written into a SIP header as a user part / token: no spaces, quotes, separators or controls. */
const headerToken = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9\-_.!~*'()&=+$,%#]+$/, "a SIP user part (letters, digits, -_.!~*'()&=+$,%#; no spaces or quotes)");

/** `trunks[].register`: REGISTER to the carrier (issue 18). Secrets as `${VAR}`. */
const registerSchema = z.object({
  /** Registrar: `sip:reg.carrier.net`, `sip:reg.carrier.net:5080;transport=tcp`, or host[:port]. */
  registrar: z.string().regex(/^(sips?:)?[^\s@<>"]+$/, 'a SIP URI or host[:port] without user part'),
  /** AoR domain when it differs from the registrar host. */
  domain: z
    .string()
    .regex(/^[A-Za-z0-9.:[\]-]+$/, 'a host name')
    .optional(),
  username: headerToken,
  /** Digest user name when it differs from the AoR user. */
  authUsername: headerToken.optional(),
  password: z.string().min(1, 'a password (use ${VAR})'),
  /** Only answer challenges for this realm (default: whatever realm the registrar names). */
  realm: z
    .string()
    .min(1)
    .regex(/^[^"\\\r\n]+$/, 'a realm without quotes or line breaks')
    .optional(),
  expiresSec: z.number().int().min(1).max(86400).default(600),
  transport: z.enum(['udp', 'tcp', 'tls']).default('udp'),
  /** User part of the Contact we register (default: username). */
  contactUser: headerToken.optional(),
  /** NAT keep-alive interval toward the registrar (0: off). CRLF on TCP/TLS. */
  keepAliveSec: z.number().int().min(0).max(3600).default(25),
  /** UDP keep-alive: a CRLF datagram, or OPTIONS (also notices a dead registrar). */
  udpKeepAlive: z.enum(['crlf', 'options']).default('crlf'),
  /** Backoff after a failed REGISTER: from retryMinSec doubling to retryMaxSec, with jitter. */
  retryMinSec: z.number().min(0.1).default(5),
  retryMaxSec: z.number().min(1).default(300),
  /**
   * With `match: registration|both`: INVITEs matched by registration must come from the registrar's
   * resolved address (safer; off for carriers that deliver from other SBCs).
   */
  requireRegistrarSource: z.boolean().default(false),
});

export const trunkSchema = z.object({
  name: z.string().min(1),
  /**
   * Source addresses allowed to send us INVITEs; anything else gets 403 (unless `match` lets a
   * registration trunk take INVITEs addressed to its registered Contact). Required unless the trunk
   * registers.
   */
  allow: z.array(cidr).default([]),
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
  // --- registration trunks and outbound identity (issue 18) ---
  /** Outbound registration to the carrier's registrar (a "credential trunk"). */
  register: registerSchema.optional(),
  /**
   * Which INVITEs belong to this trunk: `ip` (source address in `allow`), `registration` (the
   * Request-URI's user is our registered Contact user or username, from any address — or only from
   * the registrar's addresses with `register.requireRegistrarSource`), `both` (either). Default:
   * `both` when the trunk registers, else `ip`.
   */
  match: z.enum(['ip', 'registration', 'both']).optional(),
  /** Credentials answering 401/407 to our INVITEs when the trunk does not register (else register's are used). */
  outboundAuth: z
    .object({ username: headerToken, password: z.string().min(1), realm: z.string().min(1).optional() })
    .optional(),
  /** From user of our INVITEs (default: the caller number, or register.username on a registration trunk). */
  fromUser: headerToken.optional(),
  /** From host of our INVITEs (default: the registration domain, else our address). */
  fromDomain: z
    .string()
    .regex(/^[A-Za-z0-9.:[\]-]+$/, 'a host name or address')
    .optional(),
  /** Caller-ID presentation on our INVITEs: which identity header carries the calling number. */
  callerIdHeader: z.enum(['none', 'pai', 'ppi', 'rpid']).default('none'),
  /** `id`: withhold the caller ID (Privacy: id, RFC 3325; Remote-Party-ID privacy=full). */
  privacy: z.enum(['none', 'id']).default('none'),
  /** How numbers are written toward the carrier: +E.164, national (nationalPrefix + NSN) or E.164 digits. */
  numberFormat: z.enum(['e164', 'national', 'e164-digits']).default('e164'),
});

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
  transferTarget: z.string().optional(),
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
  transferTarget: z.string().optional(),
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
      .object({ host: z.string().default('0.0.0.0'), port: z.number().int().min(0).max(65535).default(8080) })
      .prefault({}),
    api: z.object({ token: optionalSecret(16, 'a token of at least 16 characters') }).prefault({}),
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
    if (cfg.whatsapp.enabled) {
      for (const k of ['phoneNumberId', 'accessToken', 'appSecret', 'verifyToken'] as const) {
        if (!cfg.whatsapp[k])
          ctx.addIssue({ code: 'custom', path: ['whatsapp', k], message: 'required when whatsapp.enabled', input: '' });
      }
    }
  });

export type GatewayConfig = z.infer<typeof configSchema>;
export type TrunkConfig = z.infer<typeof trunkSchema>;
export type TrunkRegisterConfig = z.infer<typeof registerSchema>;
export type RouteConfig = z.infer<typeof routeSchema>;
export type RealtimeRouteConfig = z.infer<typeof realtimeRoute>;
export type LocalRouteConfig = z.infer<typeof localRoute>;
export type OpenAiSipRouteConfig = z.infer<typeof openaiSipRoute>;
export type HttpToolConfig = z.infer<typeof httpToolSchema>;
export type RoutingRule = z.infer<typeof ruleSchema>;
