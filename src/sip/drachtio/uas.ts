import { GatewayError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { IncomingInvite, IncomingInviteEvents, SipDialog, SourceAddress } from '../engine.js';
import { DrachtioDialog, type DialogHost } from './dialog.js';
import { transportOf, type DialogLike, type SrfRequestLike, type SrfResponseLike } from './srf-types.js';

/**
 * drachtio-server retransmits our 200 until the ACK and gives up after 64·T1 (32 s), sending BYE
 * itself; we wait a little longer so its BYE, not our timer, normally decides.
 */
const ACK_WAIT_MS = 64 * 500 + 5000;

/** RFC 3262 §3: a reliable 18x not PRACKed within 64·T1 ends the INVITE with a 5xx. */
const PRACK_WAIT_MS = 64 * 500;

const has100rel = (value: string | undefined) => !!value && /(^|[\s,])100rel([\s,;]|$)/i.test(value);

/** A new INVITE relayed by drachtio-server; answering it makes a DrachtioDialog once the ACK comes. */
export class DrachtioInvite extends TypedEmitter<IncomingInviteEvents> implements IncomingInvite {
  readonly callId: string;
  readonly source: SourceAddress;
  cancelled = false;
  private final = false;
  /** The caller offered 100rel (Require or Supported): our 18x go reliably. */
  private readonly reliable: boolean;
  /** A reliable 18x is out and not PRACKed yet: no 2xx until it is (RFC 3262 §3). */
  private prackTimer: NodeJS.Timeout | undefined;
  /** answer() called while the PRACK was outstanding. */
  private afterPrack: { go(): void; fail(err: Error): void } | undefined;

  constructor(
    private readonly host: DialogHost,
    private readonly req: SrfRequestLike,
    private readonly res: SrfResponseLike,
    private readonly log: Logger,
    private readonly ackWaitMs = ACK_WAIT_MS,
    private readonly prackWaitMs = PRACK_WAIT_MS,
  ) {
    super();
    this.reliable = has100rel(this.header('Require')) || has100rel(this.header('Supported'));
    this.callId = req.get('Call-ID') ?? '';
    this.source = {
      address: req.source_address,
      port: Number(req.source_port),
      transport: transportOf(req.protocol),
    };
    // drachtio-server already answered the CANCEL with 200 and the INVITE with 487.
    req.on('cancel', () => {
      this.cancelled = true;
      this.final = true;
      this.stopWaitingForPrack(new GatewayError('leg_closed', 'INVITE was cancelled'));
      this.emit('cancel');
    });
  }

  get requestUri(): string {
    return this.req.uri;
  }
  get from(): string {
    return this.req.get('From') ?? '';
  }
  get to(): string {
    return this.req.get('To') ?? '';
  }
  get sdp(): string | undefined {
    return this.req.body?.trim() ? this.req.body : undefined;
  }
  header(name: string): string | undefined {
    return this.req.has(name) ? this.req.get(name) : undefined;
  }

  progress(status: 180 | 183): void {
    // One reliable 18x at a time: a later one would only queue behind the unacknowledged one.
    if (this.final || this.prackTimer) return;
    if (!this.reliable) return void this.res.send(status);
    this.prackTimer = setTimeout(() => this.onPrackTimeout(), this.prackWaitMs);
    this.res.send(
      status,
      { headers: { Require: '100rel' } },
      (err) => {
        if (!err) return;
        // drachtio-server could not send it reliably: nothing will PRACK it, so do not wait.
        this.log.warn({ sipCallId: this.callId, err: err.message }, 'reliable provisional not sent');
        this.onPrack();
      },
      () => this.onPrack(),
    );
  }

  private onPrack(): void {
    if (!this.prackTimer) return;
    clearTimeout(this.prackTimer);
    this.prackTimer = undefined;
    const next = this.afterPrack;
    this.afterPrack = undefined;
    next?.go();
  }

  private onPrackTimeout(): void {
    this.prackTimer = undefined;
    if (this.final) return;
    const why = `no PRACK for a reliable provisional response within ${this.prackWaitMs} ms`;
    this.log.warn({ sipCallId: this.callId }, why);
    this.reject(500, 'Server Internal Error (no PRACK)');
    this.emit('failed', why);
  }

  private stopWaitingForPrack(err: Error): void {
    clearTimeout(this.prackTimer);
    this.prackTimer = undefined;
    const waiting = this.afterPrack;
    this.afterPrack = undefined;
    waiting?.fail(err);
  }

  reject(status: number, reason?: string, headers: Record<string, string> = {}): void {
    if (this.final) return;
    this.final = true;
    this.stopWaitingForPrack(new GatewayError('leg_closed', `INVITE rejected (${status})`));
    if (reason) this.res.send(status, reason, { headers });
    else this.res.send(status, { headers });
  }

  ackSdp: string | undefined;

  /**
   * 200 with our SDP, held until the PRACK of a reliable 18x; resolves once the ACK arrives
   * (drachtio-srf resolves createUAS on the 200).
   */
  async answer(sdp: string, headers: Record<string, string> = {}): Promise<SipDialog> {
    if (this.cancelled) throw new GatewayError('leg_closed', 'INVITE was cancelled');
    if (this.final || this.afterPrack) throw new GatewayError('invalid_state', 'INVITE already answered');
    if (this.prackTimer) {
      await new Promise<void>((go, fail) => (this.afterPrack = { go, fail }));
      if (this.final) throw new GatewayError('invalid_state', 'INVITE already answered');
    }
    return this.sendOk(sdp, headers);
  }

  private async sendOk(sdp: string, headers: Record<string, string>): Promise<SipDialog> {
    if (!this.host.linkUp()) throw new GatewayError('upstream', 'drachtio-server link is down: cannot answer');
    this.final = true;
    let dialog: DialogLike;
    try {
      dialog = await this.host.srf.createUAS(this.req, this.res, { localSdp: sdp, headers });
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status === 487 || this.cancelled) throw new GatewayError('leg_closed', 'INVITE was cancelled');
      throw new GatewayError('upstream', `drachtio-server could not send the 200: ${(err as Error).message}`);
    }
    await this.waitForAck(dialog);
    // Delayed offer: the far end's answer came with the ACK (drachtio-srf puts it in dialog.remote).
    if (!this.sdp) this.ackSdp = dialog.remote?.sdp?.trim() ? dialog.remote.sdp : undefined;
    return new DrachtioDialog(dialog, this.callId, this.host, this.log);
  }

  /** Listeners attach before any await: drachtio-srf emits 'ack' on a later tick than the 200. */
  private waitForAck(dialog: DialogLike): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        void dialog.destroy({ headers: { Reason: 'SIP;cause=408;text="ACK timeout"' } }).catch(() => {});
        reject(new GatewayError('timeout', `no ACK within ${this.ackWaitMs} ms`));
      }, this.ackWaitMs);
      const cleanup = () => {
        clearTimeout(timer);
        dialog.removeAllListeners('ack');
        dialog.removeAllListeners('destroy');
      };
      dialog.on('ack', () => {
        cleanup();
        resolve();
      });
      // drachtio-server gave up waiting (its BYE, Reason "ACK timeout"), or the caller hung up first.
      dialog.on('destroy', (_msg, reason) => {
        cleanup();
        reject(new GatewayError('timeout', `no ACK: dialog ended before it (${reason ?? 'BYE'})`));
      });
    });
  }
}
