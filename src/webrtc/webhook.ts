import { createHmac, timingSafeEqual } from 'node:crypto';
import express from 'express';
import type { Logger } from '../core/logger.js';

/** Which business number a delivery is for (`metadata`), and what we asked Meta to echo back. */
export interface EventContext {
  phoneNumberId: string | undefined;
  displayNumber: string | undefined;
  /** `biz_opaque_callback_data` from our connect/accept, when Meta echoes it. */
  opaque: string | undefined;
}

/** One thing Meta told us about a call, already parsed out of the webhook envelope. */
export type CallEvent = EventContext &
  (
    | {
        kind: 'connect';
        waCallId: string;
        from: string;
        to: string;
        direction: 'USER_INITIATED' | 'BUSINESS_INITIATED' | string;
        sdpType: 'offer' | 'answer';
        sdp: string;
        callerName: string | undefined;
      }
    | {
        kind: 'terminate';
        waCallId: string;
        /** The user's number (the other party), for matching a business call whose id we never got. */
        user: string | undefined;
        status: string;
        durationSec: number | undefined;
        errors: WebhookError[];
      }
    | { kind: 'status'; waCallId: string; user: string | undefined; status: string; errors: WebhookError[] }
  );

export interface WebhookError {
  code: number | undefined;
  message: string;
  details: string | undefined;
}

/** HMAC-SHA256 over the raw body with the app secret, compared in constant time. */
export function validSignature(raw: Buffer, header: string | undefined, appSecret: string): boolean {
  if (!header || !header.startsWith('sha256=')) return false;
  const given = Buffer.from(header.slice(7), 'hex');
  const expected = createHmac('sha256', appSecret).update(raw).digest();
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Constant-time compare of the subscription verify token (hashed first: lengths do not leak). */
function sameToken(given: string, expected: string): boolean {
  const h = (v: string) => createHmac('sha256', 'hub.verify_token').update(v).digest();
  return timingSafeEqual(h(given), h(expected));
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined);

function parseErrors(v: unknown): WebhookError[] {
  if (!Array.isArray(v)) return [];
  return v.map((e: Record<string, unknown>) => ({
    code: typeof e?.code === 'number' ? e.code : undefined,
    message: str(e?.message) ?? str(e?.title) ?? 'unknown error',
    details: str((e?.error_data as Record<string, unknown> | undefined)?.details),
  }));
}

/**
 * Pulls call events out of a `whatsapp_business_account` delivery. Defensive by design: a field of
 * the wrong type drops that one call object (logged by the caller), never the whole delivery.
 */
export function parseCallEvents(body: unknown): CallEvent[] {
  const out: CallEvent[] = [];
  const entries = (body as { entry?: unknown })?.entry;
  if (!Array.isArray(entries)) return out;
  for (const entry of entries) {
    const changes = (entry as { changes?: unknown })?.changes;
    if (!Array.isArray(changes)) continue;
    for (const change of changes as { field?: unknown; value?: Record<string, unknown> }[]) {
      if (change?.field !== 'calls' || !change.value || typeof change.value !== 'object') continue;
      const value = change.value;
      const metadata = value.metadata as Record<string, unknown> | undefined;
      const phoneNumberId = str(metadata?.phone_number_id);
      const displayNumber = str(metadata?.display_phone_number);
      const contacts = Array.isArray(value.contacts) ? (value.contacts as Record<string, unknown>[]) : [];
      for (const c of Array.isArray(value.calls) ? (value.calls as Record<string, unknown>[]) : []) {
        const ev = parseCall(c, contacts);
        if (ev) out.push({ ...ev, phoneNumberId, displayNumber, opaque: str(c?.biz_opaque_callback_data) });
      }
      for (const s of Array.isArray(value.statuses) ? (value.statuses as Record<string, unknown>[]) : []) {
        const waCallId = str(s?.id);
        const status = str(s?.status);
        if (waCallId && status && (s.type === undefined || s.type === 'call')) {
          out.push({
            kind: 'status',
            waCallId,
            user: str(s.recipient_id),
            status: status.toUpperCase(),
            errors: parseErrors(s.errors),
            phoneNumberId,
            displayNumber,
            opaque: str(s.biz_opaque_callback_data),
          });
        }
      }
    }
  }
  return out;
}

function parseCall(c: Record<string, unknown>, contacts: Record<string, unknown>[]) {
  const waCallId = str(c?.id);
  const event = str(c?.event);
  if (!waCallId || !event) return undefined;
  if (event === 'connect') {
    const session = c.session as Record<string, unknown> | undefined;
    // Business-initiated answers have also been documented under connection.webrtc.sdp.
    const webrtc = (c.connection as { webrtc?: Record<string, unknown> } | undefined)?.webrtc;
    const sdp = str(session?.sdp) ?? str(webrtc?.sdp);
    const direction = str(c.direction) ?? 'USER_INITIATED';
    const sdpType = str(session?.sdp_type) ?? (direction === 'BUSINESS_INITIATED' ? 'answer' : 'offer');
    if (!sdp || (sdpType !== 'offer' && sdpType !== 'answer')) return undefined;
    const from = str(c.from) ?? '';
    const contact = contacts.find((k) => k?.wa_id === from);
    return {
      kind: 'connect' as const,
      waCallId,
      from,
      to: str(c.to) ?? '',
      direction,
      sdpType: sdpType as 'offer' | 'answer',
      sdp,
      callerName: str((contact?.profile as Record<string, unknown> | undefined)?.name),
    };
  }
  if (event === 'terminate') {
    const raw = Array.isArray(c.status) ? c.status[0] : c.status;
    const duration = Number(c.duration);
    const business = c.direction === 'BUSINESS_INITIATED';
    return {
      kind: 'terminate' as const,
      waCallId,
      user: str(business ? c.to : c.from),
      status: (str(raw) ?? 'COMPLETED').toUpperCase(),
      durationSec: Number.isFinite(duration) ? duration : undefined,
      errors: parseErrors(c.errors),
    };
  }
  return undefined;
}

export interface WebhookOptions {
  appSecret: string;
  verifyToken: string;
  log: Logger;
  /** Runs after the 200 has been sent; errors are logged, never returned to Meta. */
  onEvent: (ev: CallEvent) => Promise<void>;
}

/** Meta redelivers until it gets a 2xx; remember what we acted on for this long. */
const DEDUP_TTL_MS = 10 * 60_000;

/**
 * GET: subscription handshake. POST: signed deliveries only (401 and nothing acted on otherwise);
 * answered 200 at once, processed after, duplicates ignored.
 */
export function whatsappWebhookRouter(opts: WebhookOptions): express.Router {
  const router = express.Router();
  const seen = new Map<string, number>();
  const isDuplicate = (ev: CallEvent): boolean => {
    const now = Date.now();
    for (const [k, t] of seen) {
      if (now - t < DEDUP_TTL_MS) break; // insertion order = time order
      seen.delete(k);
    }
    const key = `${ev.waCallId}|${ev.kind}|${ev.kind === 'connect' ? ev.sdpType : ev.status}`;
    if (seen.has(key)) return true;
    seen.set(key, now);
    return false;
  };

  router.get('/', (req, res) => {
    const q = req.query as Record<string, unknown>;
    if (
      q['hub.mode'] === 'subscribe' &&
      typeof q['hub.verify_token'] === 'string' &&
      sameToken(q['hub.verify_token'], opts.verifyToken) &&
      typeof q['hub.challenge'] === 'string'
    ) {
      opts.log.info('WhatsApp webhook subscription verified');
      res.status(200).type('text/plain').send(q['hub.challenge']);
      return;
    }
    opts.log.warn({ mode: q['hub.mode'] }, 'WhatsApp webhook verification refused');
    res.sendStatus(403);
  });

  router.post('/', express.raw({ type: () => true, limit: '1mb' }), (req, res) => {
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (!validSignature(raw, req.get('x-hub-signature-256'), opts.appSecret)) {
      opts.log.warn({ bytes: raw.length, ip: req.ip }, 'WhatsApp webhook with a bad or missing signature refused');
      res.sendStatus(401);
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      opts.log.warn('WhatsApp webhook body is not JSON; acknowledged and ignored');
      res.sendStatus(200);
      return;
    }
    res.sendStatus(200);
    const events = parseCallEvents(body);
    setImmediate(() => {
      for (const ev of events) {
        if (isDuplicate(ev)) {
          opts.log.debug({ waCallId: ev.waCallId, kind: ev.kind }, 'duplicate WhatsApp webhook ignored');
          continue;
        }
        opts
          .onEvent(ev)
          .catch((err: Error) =>
            opts.log.error({ waCallId: ev.waCallId, kind: ev.kind, err: err.message }, 'WhatsApp call event failed'),
          );
      }
    });
  });
  return router;
}
