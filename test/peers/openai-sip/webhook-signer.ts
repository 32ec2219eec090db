import { randomUUID } from 'node:crypto';
import { Webhook } from 'standardwebhooks';

/** Signs and posts OpenAI project webhooks the way OpenAI does (Standard Webhooks headers). */
export async function postSignedWebhook(
  url: string,
  secret: string,
  event: unknown,
  tamper: { timestampOffsetSec?: number; badSignature?: boolean; omitSignature?: boolean; id?: string } = {},
): Promise<number> {
  const id = tamper.id ?? `wh_${randomUUID().replace(/-/g, '')}`;
  const when = new Date(Date.now() + (tamper.timestampOffsetSec ?? 0) * 1000);
  const body = JSON.stringify(event);
  let signature = new Webhook(secret).sign(id, when, body);
  if (tamper.badSignature) signature = `v1,${Buffer.alloc(32, 7).toString('base64')}`;
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(when.getTime() / 1000)),
  };
  if (!tamper.omitSignature) headers['webhook-signature'] = signature;
  const res = await fetch(url, { method: 'POST', headers, body });
  await res.text();
  return res.status;
}

export function incomingCallEvent(openAiCallId: string, sipHeaders: { name: string; value: string }[]) {
  return {
    object: 'event',
    id: `evt_${randomUUID().replace(/-/g, '')}`,
    type: 'realtime.call.incoming',
    created_at: Math.floor(Date.now() / 1000),
    data: { call_id: openAiCallId, sip_headers: sipHeaders },
  };
}
