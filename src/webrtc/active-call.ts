import type { Call } from '../core/call.js';
import type { Connected } from '../core/connector.js';
import type { HangupReason } from '../core/media-leg.js';
import { GraphError, type NumberCalls } from './graph.js';
import type { CallEvent } from './webhook.js';
import type { WebRtcLeg } from './webrtc-leg.js';

/** One WhatsApp call this instance holds: its leg and what Meta has been told about it. */
export interface ActiveCall {
  call: Call;
  leg: WebRtcLeg;
  direction: 'inbound' | 'outbound';
  /** Meta's call id; unknown for a business call whose `connect` response was lost. */
  waCallId: string | undefined;
  /** Graph control for the business number the call belongs to (absent in media-only mode). */
  graph: NumberCalls | undefined;
  /** Meta knows the call is live (pre_accept/accept/connect succeeded): end it with terminate. */
  signalled: boolean;
  /** Meta has already been told how this call ends (a reject sent on purpose): send nothing more. */
  graphDone?: boolean;
  /** Outbound: the AI, ready before the user could answer. */
  prepared?: Connected;
  /** Graph accept was sent (inbound): from then on the call ends with terminate, before it with reject. */
  accepted?: boolean;
  /** Media-only session: an external handler owns the WhatsApp signalling, we send none. */
  mediaOnly?: boolean;
  route?: string;
  /** The person's leg of a bridged transfer: its webhooks go to the dialer that placed it. */
  party?: { onEvent(ev: CallEvent): Promise<void> };
}

export const e164 = (n: string) => (n ? (n.startsWith('+') ? n : `+${n}`) : n);
export const digits = (n: string) => n.replace(/^\+/, '');

/**
 * Tell Meta how a call we end ends: terminate once it is live (accepted inbound, any placed
 * outbound), reject an inbound call never accepted. Nothing when Meta ended it, when a reject was
 * already sent on purpose, or when an external handler owns the signalling.
 */
export async function signalGraphEnd(a: ActiveCall, reason: HangupReason): Promise<void> {
  if (a.mediaOnly || a.graphDone || reason.by === 'remote' || !a.graph) return;
  if (!a.waCallId) {
    a.call.log.warn({ reason }, "ending a WhatsApp call whose id Meta never gave us: it can't be terminated");
    return;
  }
  try {
    if (a.signalled && (a.direction === 'outbound' || a.accepted)) {
      a.call.log.info({ reason }, 'terminating WhatsApp call via Graph');
      await a.graph.terminate(a.waCallId, a.call.id);
    } else if (a.direction === 'inbound') {
      a.call.log.info({ reason }, 'rejecting WhatsApp call via Graph');
      await a.graph.reject(a.waCallId, a.call.id);
    }
  } catch (err) {
    a.call.log.warn({ err: (err as Error).message }, 'Graph terminate failed');
  }
}

/** ICE+DTLS connected within timeoutMs; false (call ended) otherwise. */
export async function waitMedia(a: ActiveCall, timeoutMs: number): Promise<boolean> {
  try {
    await a.leg.waitConnected(timeoutMs);
    return true;
  } catch (err) {
    if (a.call.ended) return false;
    const detail = (err as Error).message;
    a.call.log.warn({ detail }, 'WhatsApp media never connected: terminating call');
    await a.call.end({ by: 'timeout', cause: 'media_timeout', detail });
    return false;
  }
}

/** Ends a call whose set-up failed, naming Meta's error when it was one. */
export async function failCall(call: Call, err: unknown): Promise<void> {
  if (call.ended) return;
  const e = err as Error;
  const meta = err instanceof GraphError ? err.meta : undefined;
  call.log.error({ err: e.message, meta }, 'WhatsApp call setup failed');
  await call.end({
    by: 'error',
    cause: err instanceof GraphError ? 'graph_error' : 'setup_failed',
    detail: e.message,
  });
}

/** A business-initiated call the user never picks up is abandoned after this long. */
const RING_TIMEOUT_MS = 60_000;

/** Ends a business-initiated call still ringing after RING_TIMEOUT_MS. */
export function endIfUnanswered(call: Call): void {
  const ring = setTimeout(() => {
    if (call.state === 'ringing')
      void call.end({ by: 'timeout', cause: 'no_answer', detail: `no answer in ${RING_TIMEOUT_MS} ms` });
  }, RING_TIMEOUT_MS);
  call.onEnd(() => clearTimeout(ring));
}

/** A terminate webhook as one line for the call record: status, duration, Meta's errors. */
export function terminateDetail(ev: Extract<CallEvent, { kind: 'terminate' }>): string {
  return [
    ev.status,
    ev.durationSec !== undefined ? `${ev.durationSec}s` : '',
    ...ev.errors.map((e) => `${e.code}: ${e.message}`),
  ]
    .filter(Boolean)
    .join(' ');
}
