import { admitCall, slotKeys, type Slot } from '../core/cluster-state.js';
import type { GatewayContext } from '../gateway.js';

export type WhatsAppCallKind = 'inbound' | 'outbound' | 'media';

/**
 * `limits.maxCalls` (the cluster's limits): takes the new call's slots, or says why it cannot.
 * All WhatsApp calls share one cap; dial-outs and media sessions also have their own.
 */
export async function admitWhatsAppCall(
  ctx: GatewayContext,
  kind: WhatsAppCallKind,
  callId: string,
): Promise<string | undefined> {
  const slots = whatsAppSlots(ctx, kind);
  const r = await admitCall(ctx.cluster, callId, slots);
  if (r.ok) return undefined;
  return 'full' in r ? slots.find((x) => x.key === r.full)!.why : `cluster state unavailable (${r.unavailable})`;
}

/** The caps a WhatsApp call of this kind counts against, each with the refusal's wording. */
export function whatsAppSlots(ctx: Pick<GatewayContext, 'config'>, kind: WhatsAppCallKind): (Slot & { why: string })[] {
  const max = ctx.config.limits.maxCalls;
  const slots: (Slot & { why: string })[] = [
    {
      key: slotKeys.front('whatsapp'),
      max: max.whatsapp,
      why: `call limit reached (${max.whatsapp} concurrent calls)`,
    },
  ];
  if (kind === 'outbound')
    slots.push({
      key: slotKeys.front('whatsapp-outbound'),
      max: max.whatsappOutbound,
      why: `dial-out limit reached (${max.whatsappOutbound} concurrent calls)`,
    });
  if (kind === 'media')
    slots.push({
      key: slotKeys.front('media-sessions'),
      max: max.mediaSessions,
      why: `media session limit reached (${max.mediaSessions} concurrent sessions)`,
    });
  return slots;
}
