import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { sendError } from './errors.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Bearer-token check in constant time (both sides hashed to equal length first, so neither the
 * content nor the length of the token leaks through timing). EventSource cannot set headers, so
 * GET requests may carry the token as `?access_token=` instead (SSE streams and the dashboard).
 */
export function bearerAuth(token: string | undefined) {
  const expected = token ? digest(token) : undefined;
  return (req: Request, res: Response, next: NextFunction) => {
    if (!expected) return sendError(res, 503, 'api_disabled', 'set api.token (API_TOKEN) to enable the REST API');
    const header = req.get('authorization') ?? '';
    const fromHeader = /^Bearer (.+)$/i.exec(header)?.[1];
    const fromQuery =
      req.method === 'GET' && typeof req.query.access_token === 'string' ? req.query.access_token : undefined;
    const given = fromHeader ?? fromQuery;
    if (!given || !timingSafeEqual(digest(given), expected)) {
      res.set('WWW-Authenticate', 'Bearer');
      return sendError(res, 401, 'unauthorized', 'missing or invalid bearer token');
    }
    next();
  };
}
