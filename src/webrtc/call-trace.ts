import type { SignallingMessage } from '../core/call.js';
import type { CallEvent } from './webhook.js';

/** One message's text kept at most (an SDP is a few KB; anything larger is cut, with its size). */
const MAX_RAW_CHARS = 8 * 1024;

/** One Graph call-action attempt as GraphClient saw it (request body, outcome). */
export interface GraphTrace {
  action: string;
  url: string;
  /** The JSON body we sent (the access token is in a header, never here). */
  request: string;
  /** HTTP status, or undefined when no response came (timeout, reset). */
  status: number | undefined;
  /** The response body, or the transport error. */
  response: string;
  ms: number;
}

const cut = (text: string) =>
  text.length > MAX_RAW_CHARS ? `${text.slice(0, MAX_RAW_CHARS)}\n… (${text.length} chars)` : text;

/**
 * A WhatsApp call's signalling for its detail page, in the same per-call bounded list as a SIP
 * call's ladder: each Graph request we sent (with its outcome) and each `calls` webhook Meta sent.
 */
export function graphMessage(t: GraphTrace): SignallingMessage {
  return {
    at: Date.now() - t.ms,
    direction: 'out',
    protocol: 'whatsapp',
    peer: `graph ${new URL(t.url).host}`,
    summary: `Graph ${t.action} → ${t.status ?? 'no response'} (${t.ms} ms)`,
    raw: cut(`POST ${t.url}\n${t.request}\n\n${t.status ?? '—'} ${t.response}`),
  };
}

export function webhookMessage(ev: CallEvent): SignallingMessage {
  const what = ev.kind === 'connect' ? `connect (${ev.sdpType})` : `${ev.kind} ${ev.status}`;
  return {
    at: Date.now(),
    direction: 'in',
    protocol: 'whatsapp',
    peer: 'webhook',
    summary: `webhook ${what}`,
    raw: cut(JSON.stringify(ev, null, 2)),
  };
}
