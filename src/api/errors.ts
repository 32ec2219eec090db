import type { Response } from 'express';
import type { ZodError } from 'zod';
import { GatewayError, type GatewayErrorCode } from '../core/errors.js';

/** Every API error has the same JSON shape: {error: {code, message}}. */
export function sendError(
  res: Response,
  status: number,
  code: string,
  message: string,
  details?: Record<string, unknown>,
): void {
  res.status(status).json({ error: { code, message, ...(details ? { details } : {}) } });
}

export function zodMessage(err: ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
}

const STATUS: Partial<Record<GatewayErrorCode, number>> = {
  not_found: 404,
  invalid_state: 409,
  limit_reached: 503,
  timeout: 504,
  upstream: 502,
  ai_connect_failed: 502,
  invalid_request: 400,
  forbidden: 403,
};

export function statusOf(err: unknown): {
  status: number;
  code: string;
  message: string;
  details?: Record<string, unknown>;
} {
  if (err instanceof GatewayError) {
    return { status: STATUS[err.code] ?? 500, code: err.code, message: err.message, details: err.details };
  }
  return { status: 500, code: 'internal', message: 'internal error' };
}
