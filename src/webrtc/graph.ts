import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

/** Meta's error object, passed through unchanged so API callers see what Meta said. */
export interface MetaError {
  code?: number;
  subcode?: number;
  type?: string;
  message?: string;
  details?: string;
  fbtraceId?: string;
}

/** A failed Graph call: `upstream` (or `timeout`), the HTTP status and Meta's own error fields. */
export class GraphError extends GatewayError {
  constructor(
    message: string,
    readonly httpStatus: number | undefined,
    readonly meta: MetaError,
    callId?: string,
    code: 'upstream' | 'timeout' = 'upstream',
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
  phoneNumberId: string;
  accessToken: string;
  log: Logger;
  timeoutMs?: number;
  /** Attempts in all (first try + retries) for 5xx / 429 / network errors. */
  attempts?: number;
  /** First backoff; doubles each retry, with jitter. */
  backoffMs?: number;
}

type Session = { sdp_type: 'offer' | 'answer'; sdp: string };

/**
 * WhatsApp Cloud API call control: POST /<version>/<phone-number-id>/calls with an `action`.
 * Hand-written over fetch: Meta publishes no maintained Node SDK for the Calling API, and the
 * surface is five JSON bodies.
 */
export class GraphClient {
  private readonly url: string;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly backoffMs: number;

  constructor(private readonly opts: GraphClientOptions) {
    this.url = `${opts.baseUrl.replace(/\/$/, '')}/${opts.version}/${encodeURIComponent(opts.phoneNumberId)}/calls`;
    this.timeoutMs = opts.timeoutMs ?? 8000;
    this.attempts = opts.attempts ?? 3;
    this.backoffMs = opts.backoffMs ?? 250;
  }

  preAccept(waCallId: string, sdp: string, callId?: string): Promise<void> {
    return this.action({ call_id: waCallId, action: 'pre_accept', session: answer(sdp) }, callId).then(() => {});
  }

  accept(waCallId: string, sdp: string, callId?: string, opaque?: string): Promise<void> {
    const body = { call_id: waCallId, action: 'accept', session: answer(sdp), ...opaqueField(opaque) };
    return this.action(body, callId).then(() => {});
  }

  reject(waCallId: string, callId?: string): Promise<void> {
    return this.action({ call_id: waCallId, action: 'reject' }, callId).then(() => {});
  }

  terminate(waCallId: string, callId?: string): Promise<void> {
    return this.action({ call_id: waCallId, action: 'terminate' }, callId).then(() => {});
  }

  /** Business-initiated call: returns the WhatsApp call id Meta assigned. */
  async connect(to: string, offerSdp: string, callId?: string, opaque?: string): Promise<string> {
    const session: Session = { sdp_type: 'offer', sdp: offerSdp };
    const res = await this.action({ to, action: 'connect', session, ...opaqueField(opaque) }, callId);
    const id = (res as { calls?: { id?: unknown }[] }).calls?.[0]?.id;
    if (typeof id !== 'string' || !id) {
      throw new GraphError('Graph connect returned no call id', 200, {}, callId);
    }
    return id;
  }

  private async action(body: Record<string, unknown>, callId?: string): Promise<unknown> {
    const action = String(body.action);
    const payload = JSON.stringify({ messaging_product: 'whatsapp', ...body });
    let lastErr: GraphError | undefined;
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      const t0 = Date.now();
      let res: Response;
      let text: string;
      try {
        res = await fetch(this.url, {
          method: 'POST',
          headers: { authorization: `Bearer ${this.opts.accessToken}`, 'content-type': 'application/json' },
          body: payload,
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        text = await res.text();
      } catch (err) {
        const timedOut = (err as Error).name === 'TimeoutError';
        lastErr = new GraphError(
          `Graph ${action} ${timedOut ? `timed out after ${this.timeoutMs} ms` : `failed: ${(err as Error).message}`}`,
          undefined,
          {},
          callId,
          timedOut ? 'timeout' : 'upstream',
        );
        this.opts.log.warn({ callId, action, err: lastErr.message, attempt }, 'Graph call action failed');
        await this.backoff(attempt);
        continue;
      }
      const json = safeJson(text);
      if (res.ok) {
        this.opts.log.info({ callId, action, ms: Date.now() - t0 }, 'Graph call action ok');
        return json;
      }
      lastErr = new GraphError(
        `Graph ${action} failed: HTTP ${res.status}${metaSummary(json)}`,
        res.status,
        metaErrorOf(json),
        callId,
      );
      this.opts.log.warn(
        { callId, action, status: res.status, meta: lastErr.meta, attempt },
        'Graph call action failed',
      );
      if (res.status < 500 && res.status !== 429) throw lastErr;
      await this.backoff(attempt);
    }
    throw lastErr!;
  }

  private async backoff(attempt: number): Promise<void> {
    if (attempt >= this.attempts) return;
    const wait = this.backoffMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5);
    await new Promise((r) => setTimeout(r, wait));
  }
}

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
