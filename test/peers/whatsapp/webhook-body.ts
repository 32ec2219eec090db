import { createHmac } from 'node:crypto';

/** Sign a webhook body the way Meta does: X-Hub-Signature-256 = sha256=HMAC(app secret, raw body). */
export function signBody(raw: string, appSecret: string): string {
  return `sha256=${createHmac('sha256', appSecret).update(raw).digest('hex')}`;
}

/** A `calls` webhook envelope as Meta delivers it. */
export function callsEnvelope(
  phoneNumberId: string,
  businessNumber: string,
  calls: Record<string, unknown>[],
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    object: 'whatsapp_business_account',
    entry: [
      {
        id: '366634483210360',
        changes: [
          {
            field: 'calls',
            value: {
              messaging_product: 'whatsapp',
              metadata: { display_phone_number: businessNumber, phone_number_id: phoneNumberId },
              calls,
              ...extra,
            },
          },
        ],
      },
    ],
  };
}

/** POST a body signed with `appSecret` to a webhook URL, as Meta delivers; returns the HTTP status. */
export async function deliverWebhook(
  url: string,
  appSecret: string,
  body: unknown,
  opts: { signature?: string | null; tamper?: (raw: string) => string } = {},
): Promise<number> {
  const raw = JSON.stringify(body);
  const sig = opts.signature === undefined ? signBody(raw, appSecret) : opts.signature;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(sig ? { 'x-hub-signature-256': sig } : {}) },
    body: opts.tamper ? opts.tamper(raw) : raw,
    signal: AbortSignal.timeout(5000),
  });
  await res.text();
  return res.status;
}
