import express, { type Request, type Response } from 'express';
import { Webhook } from 'standardwebhooks';
import { z } from 'zod';
import type { Logger } from '../../core/logger.js';

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

/** How long seen webhook ids are remembered: past the 5-minute timestamp tolerance, a replay fails anyway. */
const REPLAY_WINDOW_MS = 10 * 60 * 1000;

export interface OpenAiWebhookOptions {
  secret: string;
  log: Logger;
  onIncoming: (event: RealtimeCallIncoming) => Promise<void>;
  onRejected?: (reason: string) => void;
}

/**
 * OpenAI's project webhook (Standard Webhooks). The signature is checked over the raw body by the
 * `standardwebhooks` package (HMAC-SHA256 of id.timestamp.body, 5-minute timestamp tolerance);
 * on top of it we refuse replays of a webhook id we've already seen. Anything refused gets 401 and
 * is not acted on. Accepted events are answered 200 at once and processed after.
 */
export function openAiWebhookRouter(opts: OpenAiWebhookOptions): express.Router {
  const verifier = new Webhook(opts.secret);
  const seen = new Map<string, number>();
  const router = express.Router();
  const refuse = (res: Response, reason: string) => {
    opts.log.warn({ reason }, 'OpenAI webhook refused');
    opts.onRejected?.(reason);
    res.status(401).json({ error: { code: 'unauthorized', message: reason } });
  };
  router.post('/', express.raw({ type: '*/*', limit: '256kb' }), (req: Request, res: Response) => {
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
      payload = verifier.verify(body, headers);
    } catch (err) {
      return refuse(res, `signature check failed: ${(err as Error).message}`);
    }
    const now = Date.now();
    for (const [id, at] of seen) if (now - at > REPLAY_WINDOW_MS) seen.delete(id);
    if (seen.has(headers['webhook-id'])) return refuse(res, `replayed webhook id ${headers['webhook-id']}`);
    seen.set(headers['webhook-id'], now);
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
