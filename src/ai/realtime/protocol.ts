import type { IncomingMessage } from 'node:http';
import type WebSocket from 'ws';
/**
 * The OpenAI Realtime (GA) event protocol as this gateway uses it. Event shapes come from the
 * `openai` package's own type definitions so they cannot drift from the published API; this
 * module only maps our route config and leg formats onto them.
 */
import type {
  RealtimeAudioConfigInput,
  RealtimeAudioFormats,
  RealtimeClientEvent,
  RealtimeFunctionTool,
  RealtimeServerEvent,
  RealtimeSessionCreateRequest,
} from 'openai/resources/realtime/realtime';
import type { FirstTurnConfig, RealtimeRouteConfig } from '../../config/schema.js';
import { type AudioFormat, l16, PCMA_8K, PCMU_8K } from '../../core/audio/format.js';
import type { TranscriptEntry } from '../session.js';

export type {
  RealtimeAudioFormats,
  RealtimeClientEvent,
  RealtimeFunctionTool,
  RealtimeServerEvent,
  RealtimeSessionCreateRequest,
};

/** A server event narrowed by its `type`. */
export type ServerEventOf<T extends RealtimeServerEvent['type']> = Extract<RealtimeServerEvent, { type: T }>;
export type ClientEventOf<T extends RealtimeClientEvent['type']> = Extract<RealtimeClientEvent, { type: T }>;

export const TRANSCRIPTION_MODEL = 'gpt-4o-mini-transcribe';

export interface WireFormats {
  /** What the session is told (`audio.input.format` and `audio.output.format`). */
  wire: RealtimeAudioFormats;
  /** The same thing as a gateway AudioFormat (what the bridge converts to/from). */
  format: AudioFormat;
}

/**
 * Pick the format per leg so the bridge does the least work: G.711 legs speak G.711 to OpenAI
 * (the bridge passes frames straight through); everything else (Opus/WebRTC) uses 24 kHz PCM,
 * which Opus decodes to directly.
 */
export function wireFormatFor(leg: AudioFormat): WireFormats {
  if (leg.codec === 'pcmu') return { wire: { type: 'audio/pcmu' }, format: PCMU_8K };
  if (leg.codec === 'pcma') return { wire: { type: 'audio/pcma' }, format: PCMA_8K };
  return { wire: { type: 'audio/pcm', rate: 24000 }, format: l16(24000) };
}

export function turnDetectionFor(route: RealtimeRouteConfig): RealtimeAudioConfigInput['turn_detection'] {
  const td = route.turnDetection;
  if (td === null) return null;
  if (td.type === 'server_vad') {
    return {
      type: 'server_vad',
      threshold: td.threshold,
      prefix_padding_ms: td.prefixPaddingMs,
      silence_duration_ms: td.silenceDurationMs,
      create_response: true,
      interrupt_response: true,
    };
  }
  return { type: 'semantic_vad', eagerness: td.eagerness, create_response: true, interrupt_response: true };
}

/** The `session` object of `session.update` for one call. */
export function sessionConfig(
  route: RealtimeRouteConfig,
  formats: WireFormats,
  tools: RealtimeFunctionTool[],
  instructions: string = route.instructions,
): RealtimeSessionCreateRequest {
  return {
    type: 'realtime',
    model: route.model,
    instructions,
    output_modalities: ['audio'],
    audio: {
      input: {
        format: formats.wire,
        turn_detection: turnDetectionFor(route),
        // Off by default on a new session, so "off" is simply leaving it out.
        ...(route.transcription ? { transcription: { model: TRANSCRIPTION_MODEL } } : {}),
      },
      output: { format: formats.wire, voice: route.voice },
    },
    tools,
    tool_choice: 'auto',
  };
}

/** The URL to connect to: the route's base URL with `?model=`. */
export function realtimeUrl(route: RealtimeRouteConfig): string {
  const u = new URL(route.url);
  if (!u.searchParams.has('model')) u.searchParams.set('model', route.model);
  return u.toString();
}

/** A server event from a raw WebSocket message; throws when it is not a JSON object with a `type`. */
export function parseServerEvent(data: string): RealtimeServerEvent {
  const parsed: unknown = JSON.parse(data);
  if (typeof parsed !== 'object' || parsed === null || typeof (parsed as { type?: unknown }).type !== 'string') {
    throw new Error('no event type');
  }
  return parsed as RealtimeServerEvent;
}

/** An operator-readable reason for a refused WebSocket upgrade (status + OpenAI's error message). */
/**
 * When the server refuses the WebSocket upgrade (401, 429, ...), read its status and (bounded)
 * body and report them once; a body that never ends is given up on after a second.
 */
export function onUpgradeRefused(ws: WebSocket, report: (status: number, body: string) => void): void {
  ws.on('unexpected-response', (_req, res: IncomingMessage) => {
    const status = res.statusCode ?? 0;
    let body = '';
    let reported = false;
    const done = () => {
      if (reported) return;
      reported = true;
      report(status, body);
    };
    res.setEncoding('utf8');
    res.on('data', (c: string) => {
      if (body.length < 2000) body += c;
    });
    res.on('end', done);
    res.on('error', done);
    setTimeout(done, 1000).unref();
  });
}

/** Operator "say": ask the model to speak a text verbatim (same event for WebSocket and sideband). */
export function sayEvent(text: string): RealtimeClientEvent {
  return {
    type: 'response.create',
    response: { instructions: `Say this to the caller, word for word, then stop: "${text}"` },
  };
}

/** Caller input that is not speech (keypad digits): a user message the model answers like a turn. */
export function userTextEvent(text: string): RealtimeClientEvent {
  return {
    type: 'conversation.item.create',
    item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] },
  };
}

export function describeRefusal(status: number, body: string): string {
  let detail = '';
  try {
    const msg = (JSON.parse(body) as { error?: { message?: unknown } }).error?.message;
    if (typeof msg === 'string') detail = `: ${msg.slice(0, 200)}`;
  } catch {
    // Not JSON; the status says enough.
  }
  const why =
    status === 401
      ? 'HTTP 401 Unauthorized (the route apiKey was rejected)'
      : status === 403
        ? 'HTTP 403 Forbidden (the key has no access to this model)'
        : status === 429
          ? 'HTTP 429 Too Many Requests (rate limit or quota exceeded)'
          : `HTTP ${status}`;
  return `OpenAI Realtime refused the connection: ${why}${detail}`;
}

/**
 * The first turn as a client event (WebSocket and sideband alike), or undefined for `none`.
 * `ai`: a plain response.create, so the model greets under the session's instructions (with
 * `firstTurn.instructions` added for this one response: response-level instructions replace the
 * session's, so both are sent). `text`: the model is told to say the text verbatim — the Realtime
 * API has no verbatim TTS mode; response-level instructions are how OpenAI's guides do it.
 */
export function firstTurnEvent(
  firstTurn: FirstTurnConfig,
  sessionInstructions: string,
): RealtimeClientEvent | undefined {
  if (firstTurn.mode === 'none') return undefined;
  if (firstTurn.mode === 'text') {
    return {
      type: 'response.create',
      response: {
        instructions: `Start the call by saying exactly this to the caller, word for word, and nothing else: "${firstTurn.text ?? ''}"`,
      },
    };
  }
  if (!firstTurn.instructions) return { type: 'response.create' };
  return {
    type: 'response.create',
    response: { instructions: `${sessionInstructions}\n\nFor this first turn of the call: ${firstTurn.instructions}` },
  };
}

/**
 * Why a `response.done` is a failure, as a short code for logs and a metric label, or undefined
 * when it is not one (`completed`, or `cancelled` by barge-in). `failed` carries OpenAI's error
 * code (rate_limit_exceeded, insufficient_quota, ...); `incomplete` its reason (content_filter,
 * max_output_tokens).
 */
export function responseFailure(response: ServerEventOf<'response.done'>['response']): string | undefined {
  const status = response.status;
  if (status !== 'failed' && status !== 'incomplete') return undefined;
  const d = response.status_details;
  const raw = status === 'failed' ? (d?.error?.code ?? d?.error?.type ?? 'failed') : (d?.reason ?? 'incomplete');
  // Bounded label values: whatever the far end sends, the metric cannot grow without limit.
  return typeof raw === 'string' && /^[a-z0-9_.-]{1,48}$/i.test(raw) ? raw.toLowerCase() : `${status}_other`;
}

/** The conversation so far (newest last, at most `maxChars`) for a session re-established mid-call. */
export function seedEvent(transcript: readonly TranscriptEntry[], maxChars: number): RealtimeClientEvent {
  const lines: string[] = [];
  let chars = 0;
  for (let i = transcript.length - 1; i >= 0; i--) {
    const t = transcript[i]!;
    const line = `${t.role === 'caller' ? 'Caller' : 'You'}: ${t.text}`;
    if (chars + line.length > maxChars) break;
    lines.unshift(line);
    chars += line.length;
  }
  return {
    type: 'conversation.item.create',
    item: {
      type: 'message',
      role: 'system',
      content: [
        {
          type: 'input_text',
          text: `The line to you dropped and was re-established mid-call. The conversation so far:\n${lines.join('\n')}\nContinue from here; do not greet the caller again.`,
        },
      ],
    },
  };
}
