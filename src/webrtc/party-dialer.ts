import type { Call } from '../core/call.js';
import { GatewayError } from '../core/errors.js';
import type { PartyDialer, PartyRequest } from '../core/leg-dialer.js';
import type { MediaLeg } from '../core/media-leg.js';
import { withPartySlot } from '../core/party-slots.js';
import { canonicalDestination } from '../core/transfer-policy.js';
import type { GatewayContext } from '../gateway.js';
import { digits, type ActiveCall } from './active-call.js';
import { whatsAppSlots } from './admission.js';
import { GraphError, type GraphClient } from './graph.js';
import type { BusinessNumbers } from './numbers.js';
import type { CallEvent } from './webhook.js';
import { WebRtcLeg, type WebRtcLegOptions } from './webrtc-leg.js';

const WHATSAPP = /^whatsapp:(\+\d{6,15})$/i;

/** What the party dialer needs of the WhatsApp front (which owns the webhooks and the call table). */
export interface WhatsAppCallHost {
  readonly numbers: BusinessNumbers;
  readonly graph: GraphClient;
  readonly mediaTimeoutMs: number;
  legOptions(call: Call, entry: () => ActiveCall | undefined): WebRtcLegOptions;
  /** Route the call's webhooks (by Meta's call id) to the entry from now on. */
  hold(entry: ActiveCall): void;
}

/**
 * The WhatsApp side of bridged transfers: `whatsapp:+<number>` becomes a business-initiated call
 * (Graph `connect` with our offer) from the first business number. Resolves with the connected
 * leg once the user answers and media flows; a REJECTED status is a 603, a terminate before the
 * answer a 480 (unavailable), no answer within the ring time a `timeout` — the handoff turns
 * these into the AI's tool result. The user's terminate after the answer is the leg's hangup.
 * The leg counts against the WhatsApp caps (`limits.maxCalls.whatsapp` / `whatsappOutbound`).
 */
export class WhatsAppPartyDialer implements PartyDialer {
  constructor(
    private readonly host: WhatsAppCallHost,
    private readonly ctx: Pick<GatewayContext, 'cluster' | 'config'>,
  ) {}

  handles(destination: string): boolean {
    return WHATSAPP.test(canonicalDestination(destination));
  }

  dialParty(req: PartyRequest): Promise<MediaLeg> {
    const slots = whatsAppSlots(this.ctx, 'outbound');
    return withPartySlot(this.ctx.cluster, req.call, slots, () => this.place(req));
  }

  private async place(req: PartyRequest): Promise<MediaLeg> {
    const { call } = req;
    const to = WHATSAPP.exec(canonicalDestination(req.destination))?.[1];
    if (!to) throw new GatewayError('invalid_request', `not a WhatsApp destination: ${req.destination}`, call.id);
    const number = this.host.numbers.pick(undefined);
    if (!number) throw new GatewayError('not_found', 'no WhatsApp business number configured', call.id);
    const graph = this.host.graph.forNumber(number.phoneNumberId);
    const ref: { entry?: ActiveCall } = {};
    const { leg, offerSdp } = await WebRtcLeg.offer(this.host.legOptions(call, () => ref.entry));
    const outcome = new PartyOutcome(call, leg, this.host.mediaTimeoutMs);
    const entry: ActiveCall = { call, leg, direction: 'outbound', waCallId: undefined, graph, signalled: false };
    entry.party = outcome;
    ref.entry = entry;
    try {
      entry.waCallId = await graph.connect(digits(to), offerSdp, call.id, call.id);
    } catch (err) {
      // An unknown outcome may have rung the user, but without Meta's call id it cannot be ended
      // or matched: it is reported as failed rather than guessed at.
      await leg.close({ by: 'error', cause: 'graph_error', detail: (err as Error).message });
      const meta = err instanceof GraphError ? { meta: err.meta } : undefined;
      throw new GatewayError('upstream', `WhatsApp call to ${to} not placed: ${(err as Error).message}`, call.id, {
        cause: err,
        details: meta,
      });
    }
    entry.signalled = true;
    this.host.hold(entry);
    call.log.info({ waCallId: entry.waCallId, to }, 'WhatsApp call placed for a transfer');
    call.onEnd(() => outcome.fail(new GatewayError('leg_closed', 'the call ended while the person rang', call.id)));
    const timer = setTimeout(() => outcome.fail(ringTimeout(outcome.heard, to, req.timeoutMs, call.id)), req.timeoutMs);
    try {
      await outcome.answered;
      return leg;
    } catch (err) {
      // Graph terminate (unless the user ended it) through the leg's close → the front's signalEnd.
      const e = err as GatewayError;
      // Meta already knows when the user refused (a status came back); otherwise it is told.
      const by = e.code === 'timeout' ? 'timeout' : e.details?.status !== undefined ? 'remote' : 'error';
      await leg.close({ by, cause: by === 'timeout' ? 'no_answer' : 'transfer_failed', detail: e.message });
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * The ring time is over. A user whose phone rang (a RINGING status came) did not answer; with no
 * webhook at all for the call, Meta's signalling was lost on the way (webhook delivery down, a
 * wrong subscription) and the AI must not tell the caller the person did not pick up.
 */
function ringTimeout(heard: boolean, to: string, timeoutMs: number, callId: string): GatewayError {
  return heard
    ? new GatewayError('timeout', `${to} did not answer in ${timeoutMs} ms`, callId)
    : new GatewayError(
        'upstream',
        `no WhatsApp webhook for the call to ${to} in ${timeoutMs} ms (no ringing, answer or decline): call signalling lost`,
        callId,
      );
}

/** The person's leg from placement to answer (or refusal), then until they hang up. */
class PartyOutcome {
  readonly answered: Promise<void>;
  /** Some webhook (status, answer, terminate) arrived for the call. */
  heard = false;
  private settle!: { resolve: () => void; reject: (err: Error) => void };
  private done = false;
  private connected = false;

  constructor(
    private readonly call: Call,
    private readonly leg: WebRtcLeg,
    private readonly mediaTimeoutMs: number,
  ) {
    this.answered = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    this.answered.catch(() => {}); // observed by dialParty; never an unhandled rejection
  }

  fail(err: GatewayError): void {
    if (this.done) return;
    this.done = true;
    this.settle.reject(err);
  }

  async onEvent(ev: CallEvent): Promise<void> {
    this.heard = true;
    if (ev.kind === 'connect') return this.onAnswer(ev.sdp);
    const status = ev.kind === 'status' ? ev.status : undefined;
    if (ev.kind === 'status' && status !== 'REJECTED') return;
    const detail = ev.errors.map((e) => `${e.code}: ${e.message}`).join('; ') || undefined;
    if (this.connected) {
      this.call.log.info({ kind: ev.kind, status }, 'the WhatsApp person ended the call');
      this.leg.remoteHangup({ by: 'remote', cause: ev.kind === 'terminate' ? 'terminate' : 'rejected', detail });
      return;
    }
    const sipStatus = status === 'REJECTED' ? 603 : 480;
    this.fail(
      new GatewayError(
        'upstream',
        `WhatsApp user ${status === 'REJECTED' ? 'declined' : 'ended'} the call`,
        this.call.id,
        {
          details: { status: sipStatus, detail },
        },
      ),
    );
  }

  private async onAnswer(sdp: string): Promise<void> {
    if (this.done) return;
    try {
      await this.leg.acceptAnswer(sdp);
      this.call.log.info('WhatsApp person answered; connecting media');
      await this.leg.waitConnected(this.mediaTimeoutMs);
    } catch (err) {
      this.fail(new GatewayError('upstream', `WhatsApp media failed: ${(err as Error).message}`, this.call.id));
      return;
    }
    if (this.done) return;
    this.done = true;
    this.connected = true;
    this.settle.resolve();
  }
}
