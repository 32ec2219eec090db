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
import type { RealtimeRouteConfig } from '../../config/schema.js';
import { type AudioFormat, l16, PCMA_8K, PCMU_8K } from '../../core/audio/format.js';

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
