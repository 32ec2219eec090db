import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { sendError } from './errors.js';
import { isLoopback, type LocalAccess } from './local-access.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

export const SESSION_COOKIE = 'gw_ops';
/** Dashboard sessions held at once; the oldest is forgotten beyond this. */
const MAX_SESSIONS = 256;

/**
 * Ops authentication. The token travels only in `Authorization: Bearer` (never in a URL, where it
 * would land in access logs, browser history and Referer headers). The dashboard exchanges it once
 * (POST /v1/auth/session) for an HttpOnly, SameSite=Strict session cookie that EventSource sends by
 * itself; the page never stores the token. The cookie authorises GET only (reads and SSE), so a
 * cross-site form can never hang up or transfer a call with it.
 */
export class OpsAuth {
  private readonly expected: Buffer | undefined;
  /** session id → expiry (epoch ms), insertion-ordered. */
  private readonly sessions = new Map<string, number>();

  constructor(
    token: string | undefined,
    private readonly sessionTtlMs: number,
    /** Set when the token was generated for this run (no API_TOKEN): loopback peers only. */
    private readonly local?: LocalAccess,
  ) {
    this.expected = token ? digest(token) : undefined;
  }

  private bearerOk(req: Request): boolean {
    const given = /^Bearer (.+)$/i.exec(req.get('authorization') ?? '')?.[1];
    return !!given && !!this.expected && timingSafeEqual(digest(given), this.expected);
  }

  private cookieOk(req: Request): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const id = cookieValue(req.get('cookie'), SESSION_COOKIE);
    if (!id) return false;
    const expires = this.sessions.get(id);
    if (expires === undefined) return false;
    if (expires < Date.now()) {
      this.sessions.delete(id);
      return false;
    }
    return true;
  }

  /** Middleware: bearer token, or (GET only) a live session cookie. */
  readonly require = (req: Request, res: Response, next: NextFunction): void => {
    if (!this.expected || !this.peerAllowed(req))
      return sendError(res, 503, 'api_disabled', 'set api.token (API_TOKEN) to enable the REST API');
    if (this.bearerOk(req) || this.cookieOk(req)) return next();
    res.set('WWW-Authenticate', 'Bearer');
    sendError(res, 401, 'unauthorized', 'missing or invalid bearer token');
  };

  /** A generated token is no token for another host: see LocalAccess. */
  private peerAllowed(req: Request): boolean {
    return !this.local || isLoopback(req.socket.remoteAddress);
  }

  /** POST /v1/auth/session (bearer only): set the session cookie. DELETE forgets it. */
  readonly exchange = (req: Request, res: Response): void => {
    if (!this.peerAllowed(req))
      return sendError(res, 503, 'api_disabled', 'set api.token (API_TOKEN) to enable the REST API');
    if (!this.bearerOk(req)) {
      res.set('WWW-Authenticate', 'Bearer');
      return sendError(res, 401, 'unauthorized', 'the session exchange needs the bearer token');
    }
    this.openSession(req, res);
    res.status(204).end();
  };

  /**
   * POST /v1/auth/login {code} (no API_TOKEN, loopback only): the one-time code of the start-up
   * log's link buys a session and, once, the generated token (the page keeps it in memory for
   * actions and the phone's digest, exactly as if the operator had typed it).
   */
  readonly login = (req: Request, res: Response): void => {
    const code: unknown = (req.body as { code?: unknown } | undefined)?.code;
    if (!this.local || !this.peerAllowed(req))
      return sendError(res, 404, 'not_found', 'login links exist only without api.token, on loopback');
    if (typeof code !== 'string' || code.length > 64 || !this.local.consume(code))
      return sendError(res, 401, 'unauthorized', 'login link unknown or already used: restart, or set API_TOKEN');
    this.openSession(req, res);
    res.json({ token: this.local.token });
  };

  private openSession(req: Request, res: Response): void {
    const now = Date.now();
    for (const [k, exp] of this.sessions) if (exp < now || this.sessions.size >= MAX_SESSIONS) this.sessions.delete(k);
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(id, now + this.sessionTtlMs);
    const attrs = ['Path=/v1', 'HttpOnly', 'SameSite=Strict', `Max-Age=${Math.floor(this.sessionTtlMs / 1000)}`];
    if (req.secure) attrs.push('Secure');
    res.set('Set-Cookie', `${SESSION_COOKIE}=${id}; ${attrs.join('; ')}`);
  }

  readonly logout = (req: Request, res: Response): void => {
    const id = cookieValue(req.get('cookie'), SESSION_COOKIE);
    if (id) this.sessions.delete(id);
    res.set('Set-Cookie', `${SESSION_COOKIE}=; Path=/v1; HttpOnly; SameSite=Strict; Max-Age=0`);
    res.status(204).end();
  };
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
