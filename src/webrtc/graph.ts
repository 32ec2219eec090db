import { Agent as HttpAgent, request as httpRequest, type ClientRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { GraphTrace } from './call-trace.js';

/** Meta's error object, passed through unchanged so API callers see what Meta said. */
export interface MetaError {
  code?: number;
  subcode?: number;
  type?: string;
  message?: string;
  details?: string;
  fbtraceId?: string;
}

/**
 * What a failed Graph request means for the call:
 * - `refused`: Meta answered with an error; nothing happened.
 * - `not_sent`: the request provably never reached Meta (connection refused, DNS failure, the
 *   connection failed before it was established); safe to send again.
 * - `unknown`: it may have taken effect (timeout or reset after sending, 5xx); the call's webhooks
 *   tell what happened.
 */
export type GraphOutcome = 'refused' | 'not_sent' | 'unknown';

/** A failed Graph call: `upstream` (or `timeout`), the HTTP status and Meta's own error fields. */
export class GraphError extends GatewayError {
  constructor(
    message: string,
    readonly httpStatus: number | undefined,
    readonly meta: MetaError,
    callId?: string,
    code: 'upstream' | 'timeout' = 'upstream',
    readonly outcome: GraphOutcome = 'refused',
  ) {
    super(code, message, callId, { details: { meta } });
    this.name = 'GraphError';
  }

  /** Meta's code for a user who has not granted this business call permission. */
  get isPermissionError(): boolean {
    return this.meta.code === 138006;
  }
}

export interface GraphClientOptions {
  baseUrl: string;
  version: string;
  accessToken: string;
  log: Logger;
  timeoutMs?: number;
  /** Attempts in all (first try + retries), for the failures each action may retry. */
  attempts?: number;
  /** First backoff; doubles each retry, with jitter. */
  backoffMs?: number;
  /** Each attempt of a call action made for a gateway call (the call's signalling list). */
  onTrace?: (callId: string, trace: GraphTrace) => void;
}

type Session = { sdp_type: 'offer' | 'answer'; sdp: string };

/** Largest Graph response body read; Meta's call-action answers are a few hundred bytes. */
const MAX_RESPONSE_BYTES = 64 * 1024;
/** Network errors that mean no connection was ever made, so Meta cannot have seen the request. */
const NEVER_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH']);

/**
 * connect, pre_accept and accept are not idempotent: a second connect rings the user twice, a
 * second accept of an answered call is refused. They are sent again only when the first provably
 * never reached Meta, or Meta refused it unprocessed (429). reject and terminate are safe to repeat.
 */
const RETRY: Record<'idempotent' | 'once', (e: GraphError) => boolean> = {
  idempotent: (e) => e.outcome !== 'refused' || e.httpStatus === 429,
  once: (e) => e.outcome === 'not_sent' || e.httpStatus === 429,
};

/** Graph call control for one business number: POST /<version>/<phone-number-id>/calls. */
export interface NumberCalls {
  readonly phoneNumberId: string;
  preAccept(waCallId: string, sdp: string, callId?: string): Promise<void>;
  accept(waCallId: string, sdp: string, callId?: string, opaque?: string): Promise<void>;
  reject(waCallId: string, callId?: string): Promise<void>;
  terminate(waCallId: string, callId?: string): Promise<void>;
  /** Business-initiated call: returns the WhatsApp call id Meta assigned. */
  connect(to: string, offerSdp: string, callId?: string, opaque?: string): Promise<string>;
}

/**
 * WhatsApp Cloud API call control. Hand-written over node:http(s): Meta publishes no maintained Node
 * SDK for the Calling API, the surface is five JSON bodies, and deciding whether a failed request
 * may be repeated needs to know whether its connection was ever made, which fetch does not tell.
 */
export class GraphClient {
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly https: boolean;
  private readonly agent: HttpAgent;

  constructor(private readonly opts: GraphClientOptions) {
    this.timeoutMs = opts.timeoutMs ?? 8000;
    this.attempts = opts.attempts ?? 3;
    this.backoffMs = opts.backoffMs ?? 250;
    this.https = opts.baseUrl.startsWith('https:');
    this.agent = this.https ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  }

  forNumber(phoneNumberId: string): NumberCalls {
    const url = `${this.opts.baseUrl.replace(/\/$/, '')}/${this.opts.version}/${encodeURIComponent(phoneNumberId)}/calls`;
    const act = (body: Record<string, unknown>, retry: keyof typeof RETRY, callId?: string) =>
      this.action(url, body, RETRY[retry], callId);
    return {
      phoneNumberId,
      preAccept: (waCallId, sdp, callId) =>
        act({ call_id: waCallId, action: 'pre_accept', session: answer(sdp) }, 'once', callId).then(() => {}),
      accept: (waCallId, sdp, callId, opaque) =>
        act({ call_id: waCallId, action: 'accept', session: answer(sdp), ...opaqueField(opaque) }, 'once', callId).then(
          () => {},
        ),
      reject: (waCallId, callId) => act({ call_id: waCallId, action: 'reject' }, 'idempotent', callId).then(() => {}),
      terminate: (waCallId, callId) =>
        act({ call_id: waCallId, action: 'terminate' }, 'idempotent', callId).then(() => {}),
      connect: async (to, offerSdp, callId, opaque) => {
        const session: Session = { sdp_type: 'offer', sdp: offerSdp };
        const res = await act({ to, action: 'connect', session, ...opaqueField(opaque) }, 'once', callId);
        const id = (res as { calls?: { id?: unknown }[] }).calls?.[0]?.id;
        if (typeof id !== 'string' || !id) {
          throw new GraphError('Graph connect returned no call id', 200, {}, callId, 'upstream', 'unknown');
        }
        return id;
      },
    };
  }

  close(): void {
    this.agent.destroy();
  }

  private async action(
    url: string,
    body: Record<string, unknown>,
    mayRetry: (e: GraphError) => boolean,
    callId?: string,
  ): Promise<unknown> {
    const action = String(body.action);
    const payload = JSON.stringify({ messaging_product: 'whatsapp', ...body });
    for (let attempt = 1; ; attempt++) {
      const t0 = Date.now();
      let err: GraphError;
      const trace = (status: number | undefined, response: string) =>
        callId && this.opts.onTrace?.(callId, { action, url, request: payload, status, response, ms: Date.now() - t0 });
      try {
        const res = await this.post(url, payload);
        trace(res.status, res.text);
        const json = safeJson(res.text);
        if (res.status >= 200 && res.status < 300) {
          this.opts.log.info({ callId, action, ms: Date.now() - t0 }, 'Graph call action ok');
          return json;
        }
        err = new GraphError(
          `Graph ${action} failed: HTTP ${res.status}${metaSummary(json)}`,
          res.status,
          metaErrorOf(json),
          callId,
          'upstream',
          res.status >= 500 ? 'unknown' : 'refused',
        );
      } catch (e) {
        const t = e as TransportError;
        trace(undefined, t.timedOut ? `timed out after ${this.timeoutMs} ms` : t.message);
        err = new GraphError(
          `Graph ${action} ${t.timedOut ? `timed out after ${this.timeoutMs} ms` : `failed: ${t.message}`}`,
          undefined,
          {},
          callId,
          t.timedOut ? 'timeout' : 'upstream',
          t.sent ? 'unknown' : 'not_sent',
        );
      }
      const retry = attempt < this.attempts && mayRetry(err);
      this.opts.log.warn(
        { callId, action, status: err.httpStatus, meta: err.meta, outcome: err.outcome, attempt, retry },
        err.message,
      );
      if (!retry) throw err;
      await new Promise((r) => setTimeout(r, this.backoffMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5)));
    }
  }

  /** One POST; on failure says whether any byte of it can have reached the server. */
  private post(url: string, payload: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      let connected = false;
      let timedOut = false;
      const req: ClientRequest = (this.https ? httpsRequest : httpRequest)(url, {
        method: 'POST',
        agent: this.agent,
        headers: {
          authorization: `Bearer ${this.opts.accessToken}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
        },
      });
      const timer = setTimeout(() => {
        timedOut = true;
        req.destroy(new Error('timeout'));
      }, this.timeoutMs);
      req.on('socket', (socket) => {
        // A reused keep-alive socket is already connected: the request goes out at once.
        if (!socket.connecting) connected = true;
        else socket.once(this.https ? 'secureConnect' : 'connect', () => (connected = true));
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= MAX_RESPONSE_BYTES) chunks.push(c);
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', (e) => fail(e));
      });
      const fail = (e: Error) => {
        clearTimeout(timer);
        const code = (e as NodeJS.ErrnoException).code ?? '';
        const sent = connected && !NEVER_CONNECTED.has(code);
        reject(Object.assign(new Error(code ? `${code} ${e.message}` : e.message), { sent, timedOut }));
      };
      req.on('error', fail);
      req.end(payload);
    });
  }
}

type TransportError = Error & { sent: boolean; timedOut: boolean };

const answer = (sdp: string): Session => ({ sdp_type: 'answer', sdp });
const opaqueField = (opaque?: string) => (opaque ? { biz_opaque_callback_data: opaque } : {});

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { raw: text.slice(0, 200) };
  }
}

function metaErrorOf(json: unknown): MetaError {
  const e = (json as { error?: Record<string, unknown> } | undefined)?.error;
  if (!e || typeof e !== 'object') return {};
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const data = e.error_data as Record<string, unknown> | undefined;
  return {
    code: num(e.code),
    subcode: num(e.error_subcode),
    type: str(e.type),
    message: str(e.message),
    details: str(data?.details),
    fbtraceId: str(e.fbtrace_id),
  };
}

function metaSummary(json: unknown): string {
  const m = metaErrorOf(json);
  if (m.code === undefined && !m.message) return '';
  return ` (Meta ${m.code ?? '?'}: ${m.message ?? ''}${m.details ? ` — ${m.details}` : ''})`;
}
