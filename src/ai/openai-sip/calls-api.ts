import { GatewayError } from '../../core/errors.js';

/** The session object sent with accept (same shape as session.update's session). */
export interface AcceptSession {
  type: 'realtime';
  model: string;
  instructions?: string;
  audio?: { output?: { voice?: string } };
  tools?: unknown[];
}

/**
 * OpenAI's call-control REST API for SIP calls (/v1/realtime/calls/{call_id}/accept|reject|refer|hangup).
 * Plain fetch with a timeout: four POSTs don't justify a client library, and the base URL must point
 * at a local stand-in in tests.
 */
export class OpenAiCallsApi {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey: string,
    private readonly timeoutMs = 5000,
  ) {}

  private async post(callId: string, action: string, body: unknown, gatewayCallId?: string): Promise<void> {
    const url = `${this.baseUrl.replace(/\/$/, '')}/realtime/calls/${encodeURIComponent(callId)}/${action}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body ?? {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const e = err as Error;
      const code = e.name === 'TimeoutError' ? 'timeout' : 'upstream';
      throw new GatewayError(code, `OpenAI ${action} for ${callId} failed: ${e.message}`, gatewayCallId, {
        cause: err,
      });
    }
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      let message = text.slice(0, 300);
      try {
        message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
      } catch {}
      throw new GatewayError(
        'upstream',
        `OpenAI ${action} for ${callId}: HTTP ${res.status} ${message}`,
        gatewayCallId,
      );
    }
  }

  accept(callId: string, session: AcceptSession, gatewayCallId?: string): Promise<void> {
    return this.post(callId, 'accept', session, gatewayCallId);
  }
  reject(callId: string, statusCode = 603): Promise<void> {
    return this.post(callId, 'reject', { status_code: statusCode });
  }
  refer(callId: string, targetUri: string, gatewayCallId?: string): Promise<void> {
    return this.post(callId, 'refer', { target_uri: targetUri }, gatewayCallId);
  }
  hangup(callId: string, gatewayCallId?: string): Promise<void> {
    return this.post(callId, 'hangup', {}, gatewayCallId);
  }
}
