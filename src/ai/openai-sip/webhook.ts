import express, { type Request, type Response } from 'express';
import { Webhook } from 'standardwebhooks';
import { z } from 'zod';
import type { Logger } from '../../core/logger.js';
import type { OnceStore } from './once-store.js';

const incomingEvent = z.object({
  object: z.literal('event').optional(),
  id: z.string(),
  type: z.literal('realtime.call.incoming'),
  created_at: z.number().optional(),
  data: z.object({
    call_id: z.string().min(1),
    sip_headers: z.array(z.object({ name: z.string(), value: z.string() })),
  }),
});
export type RealtimeCallIncoming = z.infer<typeof incomingEvent>;

/** A `realtime.call.incoming` event, or undefined when `payload` is not one. */
export function parseIncoming(payload: unknown): RealtimeCallIncoming | undefined {
  const r = incomingEvent.safeParse(payload);
  return r.success ? r.data : undefined;
}

/** How long webhook ids are remembered: OpenAI retries a delivery for hours; a replay past the 5-minute
 * timestamp tolerance fails the signature check anyway, so this covers retries, not old replays. */
export const DELIVERY_MEMORY_MS = 24 * 60 * 60 * 1000;

export interface OpenAiWebhookOptions {
  /** Every `whsec_` secret an endpoint of this project may sign with (routes may name different ones). */
  secrets: string[];
  log: Logger;
  /** Remembers delivered webhook ids: a redelivery is acknowledged and not acted on again. */
  deliveries: OnceStore;
  onIncoming: (event: RealtimeCallIncoming) => Promise<void>;
  onRejected?: (reason: string) => void;
}

/**
 * One OpenAI project's webhook (Standard Webhooks). The signature is checked over the raw body by the
 * `standardwebhooks` package (HMAC-SHA256 of id.timestamp.body, 5-minute timestamp tolerance);
 * anything that fails it gets 401 and is not acted on. A delivery whose `webhook-id` was already
 * acted on (OpenAI retrying, or a second endpoint) gets 200 and nothing happens again — a 4xx would
 * make OpenAI retry for hours. Accepted events are answered 200 at once and processed after.
 */
export function openAiWebhookRouter(opts: OpenAiWebhookOptions): express.Router {
  const verifiers = [...new Set(opts.secrets)].map((s) => new Webhook(s));
  const router = express.Router();
  const refuse = (res: Response, reason: string) => {
    opts.log.warn({ reason }, 'OpenAI webhook refused');
    opts.onRejected?.(reason);
    res.status(401).json({ error: { code: 'unauthorized', message: reason } });
  };
  const verify = (body: Buffer, headers: Record<string, string>): unknown => {
    let last: Error | undefined;
    for (const v of verifiers) {
      try {
        return v.verify(body, headers);
      } catch (err) {
        last = err as Error;
      }
    }
    throw last ?? new Error('no webhook secret configured');
  };
  router.post('/', express.raw({ type: '*/*', limit: '256kb' }), async (req: Request, res: Response) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const headers = {
      'webhook-id': req.get('webhook-id') ?? '',
      'webhook-timestamp': req.get('webhook-timestamp') ?? '',
      'webhook-signature': req.get('webhook-signature') ?? '',
    };
    if (!headers['webhook-id'] || !headers['webhook-timestamp'] || !headers['webhook-signature']) {
      return refuse(res, 'missing webhook signature headers');
    }
    let payload: unknown;
    try {
      payload = verify(body, headers);
    } catch (err) {
      return refuse(res, `signature check failed: ${(err as Error).message}`);
    }
    let first: boolean;
    try {
      first = await opts.deliveries.claim(`openai-webhook:${headers['webhook-id']}`, DELIVERY_MEMORY_MS);
    } catch (err) {
      // Without the store we cannot tell a redelivery: let OpenAI retry rather than risk acting twice.
      opts.log.error({ err: (err as Error).message }, 'webhook de-duplication store failed');
      res.status(503).json({ error: { code: 'unavailable', message: 'try again' } });
      return;
    }
    if (!first) {
      opts.log.info(
        { webhookId: headers['webhook-id'] },
        'OpenAI webhook redelivered: acknowledged, not acted on again',
      );
      res.status(200).json({ ok: true, duplicate: true });
      return;
    }
    const parsed = incomingEvent.safeParse(payload);
    res.status(200).json({ ok: true });
    if (!parsed.success) {
      opts.log.info({ type: (payload as { type?: string })?.type }, 'OpenAI webhook event ignored');
      return;
    }
    opts.onIncoming(parsed.data).catch((err: unknown) => {
      opts.log.error(
        { err: (err as Error).message, openaiCallId: parsed.data.data.call_id },
        'handling realtime.call.incoming failed',
      );
    });
  });
  return router;
}
