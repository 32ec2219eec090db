import { isIP } from 'node:net';
import { z } from 'zod';
import { isE164, isSipUri, isTelUri } from '../sip/header-values.js';

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
   * Addresses allowed to send RTP/RTCP for this trunk's calls, besides the address in each call's
   * SDP (RTP from anywhere else is dropped and counted as foreign). Default: `allow`.
   */
  mediaAllow: z.array(cidr).optional(),
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

// ---- Handoff (issue 19): bridged/warm transfer and keypad input. ----
/**
 * How a transfer reaches the person: `refer` (SIP REFER, the carrier re-routes), `bridge` (the
 * gateway dials the person itself and bridges the two legs) or `auto` (REFER first; when the
 * trunk refuses it with 403/405/501 or does not answer, bridge).
 */
export const transferModeSchema = z.enum(['refer', 'bridge', 'auto']);
function handoffFields() {
  return {
    mode: transferModeSchema.default('refer'),
    /** Trunk for bridged transfers to numbers (default: the caller's trunk, else the first trunk). */
    trunk: z.string().optional(),
    /** How long the person's phone may ring before the caller goes back to the AI. */
    ringTimeoutSec: z.number().int().min(5).max(120).default(30),
    /** Said to the caller (local TTS) while the person's phone rings, before the ring-back tone. */
    holdPrompt: z.string().min(1).max(300).default('Please hold while I connect you.'),
    /**
     * Warm transfer: said to the person (local TTS) before the caller is connected. `{from}` is the
     * caller's number, `{summary}` what the AI or operator passed as `brief`. Unset: no briefing
     * unless a brief is passed.
     */
    briefing: z.string().min(1).max(1000).optional(),
    /** Whether an operator (API token) may transfer outside `allow`. */
    operatorOverride: z.boolean().default(false),
  };
}

/**
 * Caller keypad (RFC 4733 / telephone-event) to the AI: `text` collects digits and hands them to
 * the model as one user message when the terminator is pressed or the caller pauses.
 */
const keypad = z
  .object({
    mode: z.enum(['off', 'text']).default('text'),
    interDigitTimeoutMs: z.number().int().min(200).max(30_000).default(3000),
    /** Ends the input at once (and is not passed on); empty: only the pause does. */
    terminator: z.enum(['#', '*', '']).default('#'),
    maxDigits: z.number().int().min(1).max(64).default(32),
  })
  .prefault({});
export type KeypadConfig = z.infer<typeof keypad>;

// ---- Transfers (issue 12): where the AI may send a call. ----
/** One allowed transfer destination: E.164 number, E.164 prefix ending in `*`, a sip/sips/tel URI, or whatsapp:+<number>. */
const transferDestination = z
  .string()
  .refine(
    (v) => isE164(v) || /^\+\d{1,15}\*$/.test(v) || isSipUri(v) || isTelUri(v) || /^whatsapp:\+\d{6,15}$/.test(v),
    'an E.164 number (+250788000000), a prefix ending in * (+25078*), a sip:/tel: URI, or whatsapp:+<number>',
  );
/**
 * `transfer.allow`: the only destinations the model may transfer to (toll-fraud guard). Empty (the
 * default) means the route has no transfer_call tool. `transferTarget` is allowed too and is used
 * when the model names no destination.
 */
const transferPolicy = z
  .object({
    allow: z.array(transferDestination).default([]),
    ...handoffFields(),
  })
  .prefault({});

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

// ---- AI turns (issue 13): first turn, AI availability, manual turns, failed responses ----

/** What happens when the caller is connected: the model greets (`ai`), says `text` verbatim, or waits (`none`). */
const firstTurn = z
  .object({
    mode: z.enum(['ai', 'text', 'none']).default('ai'),
    /** mode `text`: what the model says, word for word. */
    text: z.string().min(1).max(2000).optional(),
    /** mode `ai`: instructions for the greeting response only (default: the route's instructions). */
    instructions: z.string().min(1).max(8000).optional(),
  })
  .refine((t) => t.mode !== 'text' || t.text !== undefined, {
    message: 'firstTurn.text is required when firstTurn.mode is "text"',
    path: ['text'],
  });

/** Shared by every AI route kind: greeting, what to do when the AI is unreachable, failed responses. */
const aiTurnFields = {
  firstTurn: firstTurn.prefault({}),
  /**
   * The AI cannot be reached or refuses (401/429/timeout) before the call is answered: `reject`
   * the call (SIP 503 + Retry-After, WhatsApp reject) so a carrier can fail over, or `apologise`:
   * answer, speak `apologyText` (local TTS) and hang up.
   */
  onAiUnavailable: z.enum(['reject', 'apologise']).default('reject'),
  /** Retry-After (seconds) sent with the 503 when the AI is unavailable. */
  retryAfterSec: z.number().int().min(0).max(86400).default(30),
  apologyText: z
    .string()
    .min(1)
    .max(500)
    .default('Sorry, the assistant is not available right now. Please call again later.'),
  /** Consecutive failed/incomplete responses before the caller hears the apology and the call ends. */
  maxFailedResponses: z.number().int().min(1).max(100).default(3),
};

/** The gateway's own energy VAD, used for manual turns (`turnDetection: null`). */
const gatewayVad = z
  .object({
    thresholdDbfs: z.number().min(-90).max(0).default(-40),
    minSpeechMs: z.number().int().min(20).max(2000).default(100),
    silenceMs: z.number().int().min(100).max(5000).default(600),
  })
  .prefault({});

const localRoute = z.object({
  kind: z.literal('local'),
  greeting: z.string().default('Hello, you are connected to the voice gateway. Say something and I will repeat it.'),
  transfer: transferPolicy,
  ...aiTurnFields,
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
  dtmf: keypad,
  tools: z.array(httpToolSchema).default([]),
  connectTimeoutMs: z.number().int().positive().default(10000),
  gatewayVad,
  ...aiTurnFields,
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
  dtmf: keypad,
  tools: z.array(httpToolSchema).default([]),
  /**
   * Bounds reaching OpenAI (dial + accept) before the caller is answered, and the sideband's
   * connect; a sideband that never comes up leaves the call running without it.
   */
  connectTimeoutMs: z.number().int().positive().default(10000),
  ...aiTurnFields,
  /**
   * A `realtime.call.incoming` we did not dial (another gateway, a carrier trunk pointed at the
   * project): `ignore` acknowledges it and leaves it to whoever placed it; `reject` refuses it (603).
   * Routes on one project must agree.
   */
  unmatched: z.enum(['ignore', 'reject']).default('ignore'),
});

export const whatsappNumberSchema = z.object({
  phoneNumberId: z.string().regex(/^\d+$/, 'the numeric phone-number ID from the WhatsApp Manager'),
  /** The business number itself (digits or E.164): `from` on outbound calls. */
  displayNumber: z.string().regex(/^\+?\d{6,15}$/, 'a phone number like +15550783881'),
  /** Route for this number's calls when no routing rule matches (instead of routing.default). */
  route: z.string().optional(),
});

export const routeSchema = z.discriminatedUnion('kind', [localRoute, realtimeRoute, openaiSipRoute]);

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

/** With shared state the instances forward to each other: each needs a reachable URL and the secret. */
function checkCluster(
  c: { redis: { url?: string }; advertiseUrl?: string; secret?: string; heartbeatSec: number; ttlSec: number },
  ctx: z.RefinementCtx,
): void {
  if (c.ttlSec < c.heartbeatSec * 2)
    ctx.addIssue({
      code: 'custom',
      path: ['cluster', 'ttlSec'],
      message: `at least twice cluster.heartbeatSec (${c.heartbeatSec}): one late heartbeat must not expire live calls`,
      input: c.ttlSec,
    });
  if (!c.redis.url) return;
  if (!c.advertiseUrl)
    ctx.addIssue({
      code: 'custom',
      path: ['cluster', 'advertiseUrl'],
      message: "required with cluster.redis.url: this instance's ops URL as the other instances reach it",
      input: undefined,
    });
  if (!c.secret)
    ctx.addIssue({
      code: 'custom',
      path: ['cluster', 'secret'],
      message: 'required with cluster.redis.url: the secret instances forward webhooks and API calls with',
      input: undefined,
    });
}

interface WhatsAppRequired {
  accessToken: string;
  appSecret: string;
  verifyToken: string;
  publicIp: string;
  phoneNumberId: string;
  numbers: { phoneNumberId: string }[];
}

function checkWhatsApp(wa: WhatsAppRequired, ctx: z.RefinementCtx): void {
  const required = (k: 'accessToken' | 'appSecret' | 'verifyToken' | 'publicIp', why: string) => {
    if (!wa[k]) ctx.addIssue({ code: 'custom', path: ['whatsapp', k], message: why, input: '' });
  };
  required('accessToken', 'required when whatsapp.enabled');
  required('appSecret', 'required when whatsapp.enabled');
  required('verifyToken', 'required when whatsapp.enabled');
  required(
    'publicIp',
    "required when whatsapp.enabled: this host's public IP address, written into every ICE candidate Meta must reach",
  );
  if (wa.publicIp && (!isIP(wa.publicIp) || /^(0\.0\.0\.0|::)$/.test(wa.publicIp))) {
    ctx.addIssue({
      code: 'custom',
      path: ['whatsapp', 'publicIp'],
      message: 'a unicast IPv4 or IPv6 address Meta can reach',
      input: wa.publicIp,
    });
  }
  if (!wa.phoneNumberId && wa.numbers.length === 0) {
    ctx.addIssue({
      code: 'custom',
      path: ['whatsapp', 'numbers'],
      message: 'at least one business number ({ phoneNumberId, displayNumber }) when whatsapp.enabled',
      input: [],
    });
  }
  const ids = [...wa.numbers.map((n) => n.phoneNumberId), ...(wa.phoneNumberId ? [wa.phoneNumberId] : [])];
  const dup = ids.find((id, i) => ids.indexOf(id) !== i);
  if (dup) {
    ctx.addIssue({
      code: 'custom',
      path: ['whatsapp', 'numbers'],
      message: `phoneNumberId ${dup} listed twice`,
      input: dup,
    });
  }
}

/** Routes on one OpenAI project share its webhook endpoint, so they must agree on unmatched calls. */
function checkOpenAiProjects(routes: Record<string, RouteConfig>, ctx: z.RefinementCtx): void {
  const byProject = new Map<string, { name: string; unmatched: string }>();
  for (const [name, r] of Object.entries(routes)) {
    if (r.kind !== 'openai-sip') continue;
    const first = byProject.get(r.projectId);
    if (!first) byProject.set(r.projectId, { name, unmatched: r.unmatched });
    else if (first.unmatched !== r.unmatched) {
      ctx.addIssue({
        code: 'custom',
        path: ['routes', name, 'unmatched'],
        message: `"${first.unmatched}" like route ${first.name}, which shares OpenAI project ${r.projectId}`,
        input: r.unmatched,
      });
    }
  }
}

export type GatewayConfig = z.infer<typeof configSchema>;
export type TrunkConfig = z.infer<typeof trunkSchema>;
export type TrunkRegisterConfig = z.infer<typeof registerSchema>;
export type RouteConfig = z.infer<typeof routeSchema>;
export type RealtimeRouteConfig = z.infer<typeof realtimeRoute>;
export type LocalRouteConfig = z.infer<typeof localRoute>;
export type OpenAiSipRouteConfig = z.infer<typeof openaiSipRoute>;
export type HttpToolConfig = z.infer<typeof httpToolSchema>;
export type RoutingRule = z.infer<typeof ruleSchema>;
export type FirstTurnConfig = z.infer<typeof firstTurn>;
/** The AI-turn settings every route kind carries (greeting, unavailability, failed responses). */
export type AiTurnConfig = { [K in keyof typeof aiTurnFields]: z.infer<(typeof aiTurnFields)[K]> };
export type GatewayVadConfig = z.infer<typeof gatewayVad>;
export type WhatsAppNumberConfig = z.infer<typeof whatsappNumberSchema>;
export type ClusterConfig = GatewayConfig['cluster'];
// ---- Handoff (issue 19) ----
export type TransferConfig = z.infer<typeof transferPolicy>;
export type TransferMode = z.infer<typeof transferModeSchema>;
