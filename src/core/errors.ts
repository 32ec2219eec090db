/** Every error the gateway raises on purpose: a stable code for logs/API and the call it concerns. */
export type GatewayErrorCode =
  | 'bad_frame'
  | 'unknown_codec'
  | 'unsupported_conversion'
  | 'config_invalid'
  | 'invalid_state'
  | 'ai_connect_failed'
  | 'ai_protocol'
  | 'leg_closed'
  | 'not_found'
  | 'limit_reached'
  | 'timeout'
  | 'upstream'
  | 'invalid_request'
  | 'forbidden';

export class GatewayError extends Error {
  readonly code: GatewayErrorCode;
  readonly callId: string | undefined;
  /** Structured facts from the far end (e.g. Meta's error code and details), passed on to API callers. */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: GatewayErrorCode,
    message: string,
    callId?: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(callId ? `[call ${callId}] ${message}` : message, options);
    this.name = 'GatewayError';
    this.code = code;
    this.callId = callId;
    this.details = options?.details;
  }
}
