import type { TransferResult } from '../ai/session.js';
import type { TransferConfig, TransferMode } from '../config/schema.js';
import { loadHoldAudio } from './audio/hold-audio.js';
import type { Pcm } from './audio/speech.js';
import { Bridge } from './bridge.js';
import type { Call } from './call.js';
import { GatewayError } from './errors.js';
import type { FrameClock } from './frame-clock.js';
import type { PartyDialer } from './leg-dialer.js';
import { LegBridge } from './leg-bridge.js';
import type { MediaLeg } from './media-leg.js';
import { PromptSession } from './prompt-session.js';

/** The route's transfer settings when it has none (local routes): REFER as before, defaults otherwise. */
export const DEFAULT_TRANSFER: TransferConfig = {
  allow: [],
  mode: 'refer',
  ringTimeoutSec: 30,
  holdPrompt: 'Please hold while I connect you.',
  operatorOverride: false,
};

/** REFER answers after which `auto` bridges instead (the trunk does not do transfers for us). */
const REFER_REFUSED = new Set([403, 405, 501]);
/** Longest wait for what the AI already said (e.g. "I'll put you through") to finish playing. */
const MAX_AI_DRAIN_MS = 10_000;
/** Longest briefing wait beyond the briefing's own length. */
const BRIEFING_SLACK_MS = 5_000;

/** One transfer attempt, as the call record shows it. */
export interface TransferRecord {
  destination: string;
  mode: TransferMode;
  by: 'ai' | 'operator';
  at: number;
  outcome: NonNullable<TransferResult['outcome']>;
  detail: string;
  /** The person's leg (bridged transfers that were answered). */
  targetLeg?: string;
  warm?: boolean;
}

export interface HandoffRequest {
  destination: string;
  mode?: TransferMode;
  trunk?: string;
  brief?: string;
  by: 'ai' | 'operator';
}

/** What the handoff needs of the caller's AI: pause it while on hold, and let it go once bridged. */
export interface AiLink {
  readonly bridge: Bridge;
  /** Close the AI for good without ending the call (the caller now talks to a person). */
  detach(reason: string): Promise<void>;
}

export interface HandoffDeps {
  clock: FrameClock;
  /** The front that can place a call to this destination, if any. */
  partyDialerFor(destination: string): PartyDialer | undefined;
}

/** Whether a REFER's Refer-To can carry `destination`: a bare number or a sip:/sips:/tel: URI. */
export function referable(destination: string): boolean {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(destination)?.[1]?.toLowerCase();
  return scheme === undefined || scheme === 'sip' || scheme === 'sips' || scheme === 'tel';
}

/**
 * Hands a call to a person: SIP REFER through the front (`refer`), or the gateway dials the person
 * itself and bridges the caller's leg to theirs (`bridge`), or REFER first and bridge when the
 * trunk refuses (`auto`). While the person's phone rings the caller hears a prompt and ring-back;
 * busy, no answer or a refusal puts the caller back with the AI and the result says which. A warm
 * transfer speaks a briefing to the person before the caller is connected.
 */
export class Handoff {
  private busy = false;

  constructor(
    private readonly call: Call,
    private readonly callerLeg: MediaLeg,
    private readonly cfg: TransferConfig,
    private readonly ai: () => AiLink | undefined,
    private readonly deps: HandoffDeps,
  ) {}

  async transfer(req: HandoffRequest): Promise<TransferResult> {
    const mode = req.mode ?? this.cfg.mode;
    if (this.busy) return { ok: false, outcome: 'failed', detail: 'a transfer is already in progress' };
    if (this.call.ended) return { ok: false, outcome: 'failed', detail: 'the call has ended' };
    this.busy = true;
    const at = Date.now();
    let result: TransferResult & { targetLeg?: string; warm?: boolean };
    try {
      result = await this.run(req, mode);
    } catch (err) {
      result = { ok: false, outcome: 'failed', detail: (err as Error).message };
    } finally {
      this.busy = false;
    }
    const record: TransferRecord = {
      destination: req.destination,
      mode,
      by: req.by,
      at,
      outcome: result.outcome ?? (result.ok ? 'bridged' : 'failed'),
      detail: result.detail,
      ...(result.targetLeg ? { targetLeg: result.targetLeg } : {}),
      ...(result.warm ? { warm: true } : {}),
    };
    this.call.transfers.push(record);
    this.call.log[result.ok ? 'info' : 'warn'](
      { destination: req.destination, mode, outcome: record.outcome, detail: record.detail, by: req.by },
      'transfer outcome',
    );
    const { ok, detail, outcome } = result;
    return { ok, detail, outcome };
  }

  private async run(req: HandoffRequest, mode: TransferMode): Promise<TransferResult & { targetLeg?: string }> {
    // A REFER can only carry what the trunk can dial (a number, sip:/sips:/tel: URI); any other
    // scheme (e.g. whatsapp:) is reached by bridging, in `auto` mode straight away.
    const refer = referable(req.destination) ? this.call.transfer : undefined;
    if (mode !== 'bridge') {
      if (refer) {
        try {
          await refer(req.destination);
          return { ok: true, outcome: 'referred', detail: `transferred to ${req.destination}` };
        } catch (err) {
          const e = err as GatewayError;
          const status = e.details?.status as number | undefined;
          const refused = e.code === 'timeout' || (status !== undefined && REFER_REFUSED.has(status));
          if (mode === 'refer' || !refused) return { ok: false, outcome: 'failed', detail: e.message };
          this.call.log.info({ status, err: e.message }, 'REFER refused by the trunk: bridging the transfer instead');
        }
      } else if (mode === 'refer') {
        return {
          ok: false,
          outcome: 'unsupported',
          detail: this.call.transfer
            ? `${req.destination} cannot be reached by REFER; use mode bridge or auto`
            : `transfer by REFER is not supported for ${this.call.info.front} calls`,
        };
      }
    }
    return this.bridged(req);
  }

  private async bridged(req: HandoffRequest): Promise<TransferResult & { targetLeg?: string; warm?: boolean }> {
    const { call } = this;
    const dialer = this.deps.partyDialerFor(req.destination);
    if (!dialer) return { ok: false, outcome: 'unsupported', detail: `no front can call ${req.destination}` };
    const link = this.ai();
    // Let what the AI already said ("I'll put you through") finish before the hold prompt.
    if (link) await within(new Promise<void>((r) => link.bridge.whenDrained(r)), MAX_AI_DRAIN_MS);
    const hold = new PromptSession(this.callerLeg.format, {
      text: this.cfg.holdPrompt,
      then: 'ringback',
      holdAudio: await this.holdAudio(),
      log: call.log,
    });
    await hold.start();
    if (call.ended) return { ok: false, outcome: 'failed', detail: 'the call ended' };
    link?.bridge.stop();
    const holdBridge = new Bridge(call, this.callerLeg, hold, this.deps.clock);
    holdBridge.start();
    call.setTapSource(holdBridge);
    hold.startFirstTurn();
    const promptEnds = performance.now() + hold.promptMs;
    const backToAi = async () => {
      // A quick refusal (busy) still lets the caller hear the whole prompt, not half a sentence.
      const left = promptEnds - performance.now();
      if (left > 0) await within(new Promise<void>(() => {}), left);
      holdBridge.stop();
      await hold.close('transfer_failed');
      if (call.ended || !link) return;
      link.bridge.start();
      call.setTapSource(link.bridge);
    };
    call.onEnd(() => {
      holdBridge.stop();
      return hold.close('call_ended');
    });

    let target: MediaLeg;
    try {
      call.log.info(
        { destination: req.destination, trunk: req.trunk ?? this.cfg.trunk },
        'dialling the transfer target',
      );
      target = await dialer.dialParty({
        call,
        destination: req.destination,
        trunk: req.trunk ?? this.cfg.trunk,
        timeoutMs: this.cfg.ringTimeoutSec * 1000,
      });
    } catch (err) {
      await backToAi();
      return failure(err as GatewayError, req.destination);
    }
    if (call.ended) {
      await target.close(call.endReason ?? { by: 'gateway', cause: 'ended' });
      return { ok: false, outcome: 'failed', detail: 'the call ended while the target answered' };
    }
    this.adoptTarget(target);

    const briefing = this.briefingText(req.brief);
    if (briefing) await this.brief(target, briefing);
    if (call.ended) return { ok: false, outcome: 'failed', detail: 'the call ended during the briefing' };

    holdBridge.stop();
    await hold.close('connected');
    await link?.detach('transferred');
    const legs = new LegBridge(call, this.callerLeg, target, this.deps.clock);
    legs.start();
    call.setTapSource(legs);
    call.onEnd(() => legs.stop());
    // Keypresses now belong to the people on the call.
    this.callerLeg.on('dtmf', (d, ms) => target.sendDtmf?.(d, ms));
    target.on('dtmf', (d, ms) => this.callerLeg.sendDtmf?.(d, ms));
    return {
      ok: true,
      outcome: 'bridged',
      detail: `connected to ${req.destination}`,
      targetLeg: target.id,
      warm: briefing !== undefined,
    };
  }

  /** The route's hold audio file; a file gone bad since start-up falls back to the ring-back (logged). */
  private async holdAudio(): Promise<Pcm | undefined> {
    if (!this.cfg.holdAudio) return undefined;
    try {
      return await loadHoldAudio(this.cfg.holdAudio);
    } catch (err) {
      this.call.log.warn({ err: (err as Error).message }, 'hold audio unusable: playing ring-back instead');
      return undefined;
    }
  }

  /** The person's leg joins the call: their hang-up ends it (and says it was them). */
  private adoptTarget(target: MediaLeg): void {
    this.call.parties.set(this.callerLeg.id, 'caller');
    this.call.parties.set(target.id, 'target');
    this.call.addLeg(target);
  }

  private briefingText(brief: string | undefined): string | undefined {
    const template = this.cfg.briefing ?? (brief ? 'You have a call from {from}. {summary}' : undefined);
    if (!template) return undefined;
    return template.replaceAll('{from}', spellNumber(this.call.info.from)).replaceAll('{summary}', brief ?? '');
  }

  /** Warm transfer: the person hears the briefing while the caller stays on hold. */
  private async brief(target: MediaLeg, text: string): Promise<void> {
    const { call } = this;
    const session = new PromptSession(target.format, { text, then: 'silence', log: call.log });
    await session.start();
    if (call.ended) return;
    const bridge = new Bridge(call, target, session, this.deps.clock);
    bridge.start();
    session.startFirstTurn();
    call.log.info({ text }, 'briefing the transfer target');
    await within(new Promise<void>((r) => bridge.whenDrained(r)), session.promptMs + BRIEFING_SLACK_MS);
    bridge.stop();
    await session.close('briefed');
  }
}

/** The dial's failure as the model should hear it. */
function failure(err: GatewayError, destination: string): TransferResult {
  // The model and the API caller read this: the call id tags (one per wrapping) are noise there.
  const why = err.message.replace(/\[call [^\]]*\] /g, '');
  if (err.code === 'limit_reached')
    return { ok: false, outcome: 'no_capacity', detail: `cannot call ${destination} now: ${why}` };
  const status = err.details?.status as number | undefined;
  if (err.code === 'timeout' || status === 408 || status === 480)
    return { ok: false, outcome: 'no_answer', detail: `${destination} did not answer` };
  if (status === 486 || status === 600) return { ok: false, outcome: 'busy', detail: `${destination} is busy` };
  if (status !== undefined)
    return { ok: false, outcome: 'rejected', detail: `${destination} refused the call (${status})` };
  return { ok: false, outcome: 'failed', detail: `could not call ${destination}: ${why}` };
}

/** Digits read one by one by the TTS ("+250788..." would otherwise be read as a large number). */
function spellNumber(n: string): string {
  return /^\+?\d+$/.test(n) ? n.replace(/\d/g, '$& ').trim() : n;
}

async function within(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}
