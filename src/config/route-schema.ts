import { z } from 'zod';
import { holdAudioProblem } from '../core/audio/hold-audio.js';
import { isE164, isSipUri, isTelUri } from '../sip/header-values.js';

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
     * A WAV (mono 16-bit PCM, 8/16/24/48 kHz) played looped after the hold prompt instead of the
     * generated ring-back. Checked when the config loads.
     */
    holdAudio: z
      .string()
      .min(1)
      .optional()
      .superRefine((path, ctx) => {
        const problem = path === undefined ? undefined : holdAudioProblem(path);
        if (problem) ctx.addIssue({ code: 'custom', message: problem, input: path });
      }),
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
export const keypad = z
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
export const transferDestination = z
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
export const transferPolicy = z
  .object({
    allow: z.array(transferDestination).default([]),
    ...handoffFields(),
  })
  .prefault({});

export const turnDetection = z.union([
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
export const firstTurn = z
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
export const aiTurnFields = {
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

/** The model and its persona, shared by the Realtime WebSocket and OpenAI SIP routes. */
const openAiModelFields = {
  apiKey: z.string().min(1),
  model: z.string().default('gpt-realtime'),
  voice: z.string().default('marin'),
  instructions: z.string().default('You are a helpful voice assistant on a phone call. Be brief.'),
};

/** What the model may do to the call: transfer (allow-listed), keypad both ways, HTTP tools. */
const callActionFields = {
  transferTarget: transferDestination.optional(),
  transfer: transferPolicy,
  dtmf: keypad,
  tools: z.array(httpToolSchema).default([]),
};

/** The gateway's own energy VAD, used for manual turns (`turnDetection: null`). */
export const gatewayVad = z
  .object({
    thresholdDbfs: z.number().min(-90).max(0).default(-40),
    minSpeechMs: z.number().int().min(20).max(2000).default(100),
    silenceMs: z.number().int().min(100).max(5000).default(600),
  })
  .prefault({});

export const localRoute = z.object({
  kind: z.literal('local'),
  greeting: z.string().default('Hello, you are connected to the voice gateway. Say something and I will repeat it.'),
  transfer: transferPolicy,
  ...aiTurnFields,
});

export const realtimeRoute = z.object({
  kind: z.literal('realtime'),
  url: z.string().url().default('wss://api.openai.com/v1/realtime'),
  ...openAiModelFields,
  turnDetection: turnDetection.default({
    type: 'server_vad',
    threshold: 0.5,
    prefixPaddingMs: 300,
    silenceDurationMs: 500,
  }),
  transcription: z.boolean().default(true),
  ...callActionFields,
  connectTimeoutMs: z.number().int().positive().default(10000),
  gatewayVad,
  ...aiTurnFields,
});

export const openaiSipRoute = z.object({
  kind: z.literal('openai-sip'),
  projectId: z.string().min(1),
  webhookSecret: z.string().min(1),
  ...openAiModelFields,
  sipUri: z.string().optional(),
  apiBaseUrl: z.string().url().default('https://api.openai.com/v1'),
  /** Sideband WebSocket to the call (`?call_id=`): transcripts, tools, end_call. Audio stays on SIP. */
  sideband: z.boolean().default(true),
  realtimeUrl: z.string().url().default('wss://api.openai.com/v1/realtime'),
  /** Caller transcripts (input transcription, switched on over the sideband). */
  transcription: z.boolean().default(true),
  ...callActionFields,
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

export type RouteConfig = z.infer<typeof routeSchema>;
export type RealtimeRouteConfig = z.infer<typeof realtimeRoute>;
export type LocalRouteConfig = z.infer<typeof localRoute>;
export type OpenAiSipRouteConfig = z.infer<typeof openaiSipRoute>;
export type HttpToolConfig = z.infer<typeof httpToolSchema>;
export type FirstTurnConfig = z.infer<typeof firstTurn>;
export type AiTurnConfig = { [K in keyof typeof aiTurnFields]: z.infer<(typeof aiTurnFields)[K]> };
export type GatewayVadConfig = z.infer<typeof gatewayVad>;
export type WhatsAppNumberConfig = z.infer<typeof whatsappNumberSchema>;
export type TransferConfig = z.infer<typeof transferPolicy>;
export type TransferMode = z.infer<typeof transferModeSchema>;
