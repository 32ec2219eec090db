import { randomUUID } from 'node:crypto';
import { createConverter, type FrameConverter } from '../core/audio/converter.js';
import { sameFormat, type AudioFormat } from '../core/audio/format.js';
import type { HangupReason, LegQuality, MediaLeg, MediaLegEvents } from '../core/media-leg.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import type { RtpPorts } from './rtp.js';
import type { RtpLeg } from './rtp-leg.js';

/**
 * The callee's side of a dial-out, handed to the core before the INVITE leaves so the AI can be
 * opened and bridged while nobody can hear it yet. The bridge and the AI are built for `format`
 * (the first codec we offer); the callee's 2xx brings the real RTP leg (`attach`), and when they
 * chose the other G.711 law the frames are converted A-law⇄µ-law here (the core is not rebuilt
 * mid-call for it). Until then it yields no audio and sends none, and it owns the RTP ports our
 * offer named, so a call that ends while ringing still frees them.
 */
export class DialOutLeg extends TypedEmitter<MediaLegEvents> implements MediaLeg {
  readonly id = randomUUID();
  private inner: RtpLeg | undefined;
  private fromWire: FrameConverter | undefined;
  private toWire: FrameConverter | undefined;
  private closing: Promise<void> | undefined;
  private closeReason: HangupReason | undefined;

  constructor(
    readonly callId: string,
    readonly format: AudioFormat,
    private readonly ports: RtpPorts,
  ) {
    super();
  }

  /** Whether the callee answered and media is wired. */
  /** The RTP port offered in the INVITE (the far end sends here, before and after the answer). */
  get localPort(): number {
    return this.ports.port;
  }

  get answered(): boolean {
    return this.inner !== undefined;
  }

  /** The callee answered: from now on frames go to and come from `leg` (which owns the ports). */
  attach(leg: RtpLeg): void {
    if (this.inner) throw new Error('dial-out leg already attached');
    this.inner = leg;
    if (!sameFormat(leg.format, this.format)) {
      this.fromWire = createConverter(leg.format, this.format, this.callId);
      this.toWire = createConverter(this.format, leg.format, this.callId);
    }
    leg.on('started', () => this.emit('started'));
    leg.on('dtmf', (digit, ms) => this.emit('dtmf', digit, ms));
    leg.on('hangup', (reason) => this.emit('hangup', reason));
    // Ended while the 2xx was on its way: the answered leg goes too (its close sends our BYE).
    if (this.closeReason) void leg.close(this.closeReason);
  }

  /** The wire codec, once answered (it differs from `format` when the callee chose the other law). */
  get wireFormat(): AudioFormat | undefined {
    return this.inner?.format;
  }

  readFrame(): Buffer | null {
    const frame = this.inner?.readFrame() ?? null;
    return frame && this.fromWire ? this.fromWire.convert(frame) : frame;
  }

  writeFrame(frame: Buffer): void {
    this.inner?.writeFrame(this.toWire ? this.toWire.convert(frame) : frame);
  }

  sendDtmf(digit: string, durationMs?: number): boolean {
    return this.inner?.sendDtmf(digit, durationMs) ?? false;
  }

  quality(): LegQuality {
    return this.inner?.quality() ?? { packetsSent: 0, packetsReceived: 0 };
  }

  /** Idempotent. Before the answer only the ports are freed (the dialer CANCELs the INVITE). */
  close(reason: HangupReason): Promise<void> {
    this.closeReason ??= reason;
    this.closing ??= (async () => {
      try {
        if (this.inner) await this.inner.close(reason);
        else await this.ports.release();
      } finally {
        this.emit('closed');
      }
    })();
    return this.closing;
  }
}
