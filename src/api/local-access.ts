import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Zero-config local access (`npm start` with no API_TOKEN). The gateway makes up a random token
 * for this run and a one-time login code, and prints a login link (the code rides in the URL
 * fragment, which browsers never send to a server, so it lands in no access log). Both are
 * honoured only from loopback peers: without a configured token the API is never open to another
 * host, whatever listener it shares. The code works once; the page trades it for a session.
 */
export class LocalAccess {
  readonly token = randomBytes(32).toString('base64url');
  /** For the start-up log's link only; dead once used. */
  readonly loginCode = randomBytes(18).toString('base64url');
  private used = false;

  /** True once for the right code; the code is dead afterwards (replays get false). */
  consume(given: string): boolean {
    if (this.used || !timingSafeEqual(digest(given), digest(this.loginCode))) return false;
    this.used = true;
    return true;
  }
}

/** 127.0.0.0/8, ::1, and IPv4-mapped loopback (::ffff:127.x) as Node reports a dual-stack peer. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (isIP(a) === 4) return a.startsWith('127.');
  return a === '::1';
}
