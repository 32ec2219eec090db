import { createHmac, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { ClusterState, PeerLink, PeerReply } from '../core/cluster-state.js';

export const SECRET_HEADER = 'x-cluster-secret';
/** Marks a request another instance forwarded: it is acted on here and never forwarded again (no loops). */
export const FORWARDED_HEADER = 'x-cluster-forwarded-by';

const mac = (v: string) => createHmac('sha256', 'cluster-secret').update(v).digest();

/** Constant-time check of the shared secret (hashed first so lengths do not leak). */
export function peerAuthentic(req: Request, secret: string | undefined): boolean {
  const given = req.get(SECRET_HEADER);
  return !!secret && !!given && timingSafeEqual(mac(given), mac(secret));
}

/** Guards /internal/cluster: only instances holding the secret get past. */
export function requirePeer(secret: string | undefined) {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (peerAuthentic(req, secret)) return next();
    res.status(401).json({ error: { code: 'unauthorized', message: 'cluster secret required' } });
  };
}

/**
 * Instance-to-instance requests over plain HTTP to the peer's advertised ops URL, authenticated by the
 * shared secret. Chosen over Redis pub/sub because the sender learns the outcome: the owner answers
 * (200 acted on, 404 not mine any more) within a deadline, so a lost or dead owner is logged and the
 * event can be handled as "unknown call" instead of vanishing into a channel nobody listened to; and
 * webhook payloads stay out of Redis.
 */
export class HttpPeerLink implements PeerLink {
  private urls = new Map<string, string>();
  private fetchedAt = 0;

  constructor(
    private readonly cluster: ClusterState,
    private readonly secret: string | undefined,
    private readonly timeoutMs = 3000,
  ) {}

  private async urlOf(instanceId: string): Promise<string | undefined> {
    // Instance URLs change only when instances come and go: a second's cache spares Redis a read per event.
    if (!this.urls.has(instanceId) || Date.now() - this.fetchedAt > 1000) {
      const list = await this.cluster.instances();
      this.urls = new Map(list.flatMap((i) => (i.url ? [[i.id, i.url.replace(/\/$/, '')] as const] : [])));
      this.fetchedAt = Date.now();
    }
    return this.urls.get(instanceId);
  }

  async send(instanceId: string, method: string, path: string, body?: unknown): Promise<PeerReply> {
    const base = await this.urlOf(instanceId);
    if (!base) throw new Error(`instance ${instanceId} is not live (or advertises no URL)`);
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        [SECRET_HEADER]: this.secret ?? '',
        [FORWARDED_HEADER]: this.cluster.instanceId,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON: relayed as text
    }
    return { status: res.status, body: parsed };
  }
}
