import { randomUUID } from 'node:crypto';
import { createCodec } from '../../../src/core/audio/codecs.js';
import { PCMA_8K, PCMU_8K } from '../../../src/core/audio/format.js';
import { GatewayError } from '../../../src/core/errors.js';
import type { LegDialer, OutboundLegRequest } from '../../../src/core/leg-dialer.js';
import { frames, tone } from '../../support/audio.js';
import { MemoryLeg } from '../../support/memory-leg.js';
import type { OpenAiApiStandIn } from './api-standin.js';
import { incomingCallEvent, postSignedWebhook } from './webhook-signer.js';

/**
 * OpenAI's side of a SIP call, without the SIP transport: on "INVITE" it posts a signed
 * realtime.call.incoming to the gateway's webhook (INVITE headers as sip_headers), answers only
 * once the accept request reaches the API stand-in, then plays a 440 Hz tone and records what it hears.
 * (The SIP front's own tests drive the same flow over real SIP.)
 */
export class FakeOpenAiSipDialer implements LegDialer {
  readonly legs: MemoryLeg[] = [];
  readonly invites: OutboundLegRequest[] = [];
  /** HTTP status of every webhook delivery made. */
  readonly statuses: number[] = [];

  constructor(
    private readonly webhookUrl: () => string,
    private readonly secret: string,
    private readonly api: OpenAiApiStandIn,
    private readonly toneHz = 440,
    /** Deliver each incoming-call event this many times with one webhook-id (OpenAI retrying). */
    private readonly deliveries = 1,
  ) {}

  async dial(req: OutboundLegRequest): Promise<MemoryLeg> {
    this.invites.push(req);
    const openAiCallId = `rtc_${randomUUID().replace(/-/g, '')}`;
    const sipHeaders = [
      { name: 'From', value: `<sip:${req.from}@gateway.example>;tag=1` },
      { name: 'To', value: `<${req.uri}>` },
      { name: 'Call-ID', value: `${randomUUID()}@gateway.example` },
      ...Object.entries(req.headers).map(([name, value]) => ({ name, value })),
    ];
    const event = incomingCallEvent(openAiCallId, sipHeaders);
    const webhookId = `wh_${randomUUID().replace(/-/g, '')}`;
    for (let i = 0; i < this.deliveries; i++) {
      const status = await postSignedWebhook(this.webhookUrl(), this.secret, event, { id: webhookId });
      this.statuses.push(status);
      if (status !== 200) throw new GatewayError('upstream', `webhook refused with ${status}`, req.call.id);
    }
    const decision = await this.api.waitFor((r) => r.callId === openAiCallId, req.timeoutMs);
    if (decision.action !== 'accept')
      throw new GatewayError('upstream', `OpenAI call ${decision.action}ed`, req.call.id);
    const format = req.codecs[0] === 'PCMA' ? PCMA_8K : PCMU_8K;
    const codec = createCodec(format);
    const leg = new MemoryLeg(`openai-${req.call.id}`, format, codec.silence());
    leg.feed(frames(tone(this.toneHz, 8000, 20_000, 8000), 160).map((f) => codec.encode(f)));
    this.legs.push(leg);
    return leg;
  }
}
