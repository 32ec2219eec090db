import { createServer, type RequestListener, type Server } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { GatewayConfig } from '../config/schema.js';
import { sendError } from './errors.js';

/**
 * An HTTP listener that a stranger cannot hold open: headers and the whole request must arrive
 * within their timeouts (Node answers 408 and closes; slowloris and slow bodies), idle keep-alive
 * sockets close, and connections beyond the cap are dropped at accept.
 */
export function hardenedServer(app: RequestListener, http: GatewayConfig['http']): Server {
  const requestTimeout = http.requestTimeoutMs;
  const server = createServer(
    {
      requestTimeout,
      // Node refuses headersTimeout > requestTimeout.
      headersTimeout: Math.min(http.headersTimeoutMs, requestTimeout),
      keepAliveTimeout: http.keepAliveTimeoutMs,
      // How often Node checks the two timeouts above (default 30 s would let a slow body live that long).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(requestTimeout / 4))),
    },
    app,
  );
  server.maxConnections = http.maxConnections;
  server.maxHeadersCount = 100;
  return server;
}

/**
 * Refuse a declared body above `maxBytes` (413, connection closed) before any route reads it, so
 * an oversized webhook costs neither memory nor an HMAC. Chunked bodies without a length are
 * bounded by each webhook's own raw-body limit.
 */
export function limitBody(maxBytes: number): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const declared = Number(req.get('content-length') ?? 0);
    if (declared > maxBytes) {
      res.set('Connection', 'close');
      return sendError(res, 413, 'too_large', `request body above ${maxBytes} bytes`);
    }
    next();
  };
}
