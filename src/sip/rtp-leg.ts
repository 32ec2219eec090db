import { randomBytes, randomUUID } from 'node:crypto';
import type { RemoteInfo, Socket } from 'node:dgram';
import { createCodec, type FrameCodec } from '../core/audio/codecs.js';
import type { AudioFormat } from '../core/audio/format.js';
import { JitterBuffer } from '../core/jitter-buffer.js';
import type { Logger } from '../core/logger.js';
import type { HangupReason, LegQuality, MediaLeg, MediaLegEvents } from '../core/media-leg.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import { TelephoneEventReader, TelephoneEventSender } from '../core/telephone-event.js';
import { buildRtcpReport, buildRtp, parseRtp, srNtpMiddle, type RtpPorts } from './rtp.js';
import { AddressSet, SampledLog, SourceLatch, type Endpoint } from './media-source.js';
import {
  acceptablePayload,
  comfortNoisePcm,
  FRAME_SAMPLES as SAMPLES,
  RxReframer,
  TxPacketizer,
} from './packetizer.js';
import { formatOf, isNullAddress, sendPtime, type AudioOffer, type Direction } from './sdp.js';

/** RFC 3389 payload type of comfort noise (static). */
const CN_STATIC_PT = 13;

export interface RtpLegOptions {
  callId: string;
  log: Logger;
  ports: RtpPorts;
  offer: AudioOffer;
  /** Our side's direction (from our SDP answer). */
  direction: Direction;
  /** No RTP for this long → hangup {by:'timeout', cause:'rtp_timeout'}. */
  timeoutMs: number;
  rtcpIntervalMs?: number;
  /**
   * Addresses besides the SDP's that may send us media (the trunk's `mediaAllow`). Empty or
   * absent: only the SDP address.
   */
  mediaAllow?: AddressSet;
  /** Front signalling when the leg closes (BYE when the gateway/AI ended the call). */
  onClose?: (reason: HangupReason) => Promise<void>;
}

export interface RtpCounters {
  short: number;
  /** Payloads that are not a whole number of 10 ms (80..480 bytes). */
  badSize: number;
  badVersion: number;
  unknownPt: number;
  /** Packets from sources outside the media policy, or contending with the latched source. */
  foreign: number;
  relatched: number;
  comfortNoise: number;
  rtcpReceived: number;
  rtcpSent: number;
  dtmfReceived: number;
  /** Sends skipped (no valid destination: port 0/above 65535, null address) or refused by the OS. */
  sendSkipped: number;
  sendErrors: number;
}

/**
 * A carrier's G.711 audio over plain RTP: one UDP port pair per call, symmetric RTP (we send to
 * wherever the carrier's RTP actually comes from, since SBC/NAT addresses in SDP are often wrong)
 * restricted to the media source policy (media-source.ts), any ptime from 10 to 60 ms re-framed
 * to 20 ms (packetizer.ts), comfort noise, RTCP SR/RR every 5 s, RFC 4733 DTMF both ways, and an
 * inactivity timeout that RTP, CN and RTCP all reset and that hold suspends.
 */
export class RtpLeg extends TypedEmitter<MediaLegEvents> implements MediaLeg {
  readonly id = randomUUID();
  readonly callId: string;
  format: AudioFormat;
  private readonly log: Logger;
  private readonly jitter: JitterBuffer;
  private offer: AudioOffer;
  private direction: Direction;
  private remote: Endpoint;
  private remoteRtcp: Endpoint;
  private readonly latch: SourceLatch;
  private readonly reframer: RxReframer;
  private tx: TxPacketizer;
  private readonly codec: FrameCodec;
  /** Level (-dBov) of the comfort noise to play while the carrier is silent, after a CN packet. */
  private cnLevel: number | undefined;
  private readonly foreignLog = new SampledLog();
  private readonly sendErrorLog = new SampledLog();
  private readonly ssrc = randomBytes(4).readUInt32BE(0);
  private seq = randomBytes(2).readUInt16BE(0);
  private timestamp = randomBytes(4).readUInt32BE(0);
  private firstPacket = true;
  private sent = 0;
  private sentOctets = 0;
  private received = 0;
  private remoteSsrc: number | undefined;
  private baseSeq = -1;
  private maxSeqExt = -1;
  private lastSr: { middle: number; at: number } | undefined;
  private lastRtcpExpected = 0;
  private lastRtcpReceived = 0;
  /** RFC 4733 both ways; SIP telephone-event is always 8000 Hz, the G.711 clock. */
  private readonly dtmfIn = new TelephoneEventReader(8000);
  private readonly dtmfOut = new TelephoneEventSender(8000);
  private lastRxAt = Date.now();
  private readonly timers: NodeJS.Timeout[] = [];
  private closing: Promise<void> | undefined;
  readonly counters: RtpCounters = {
    short: 0,
    badVersion: 0,
    unknownPt: 0,
    foreign: 0,
    rtcpReceived: 0,
    rtcpSent: 0,
    dtmfReceived: 0,
    badSize: 0,
    relatched: 0,
    comfortNoise: 0,
    sendSkipped: 0,
    sendErrors: 0,
  };

  constructor(private readonly opts: RtpLegOptions) {
    super();
    this.callId = opts.callId;
    this.log = opts.log.child({ component: 'rtp', port: opts.ports.port });
    this.offer = opts.offer;
    this.direction = opts.direction;
    this.format = formatOf(opts.offer.codec);
    this.remote = { address: opts.offer.address, port: opts.offer.port };
    this.remoteRtcp = { address: opts.offer.address, port: opts.offer.rtcpPort };
    const codec = createCodec(this.format, 8000, opts.callId);
    this.codec = codec;
    this.jitter = new JitterBuffer({ clockRate: 8000, conceal: (last, lost) => codec.conceal(last, lost) });
    this.latch = new SourceLatch(opts.mediaAllow ?? new AddressSet(), opts.offer.address);
    this.reframer = new RxReframer(codec.silence()[0]!);
    this.tx = new TxPacketizer(sendPtime(opts.offer));
    const { rtp, rtcp } = opts.ports;
    rtp.on('message', (buf, rinfo) => this.onRtp(buf, rinfo));
    rtcp.on('message', (buf, rinfo) => this.onRtcp(buf, rinfo));
    for (const s of [rtp, rtcp]) s.on('error', (err) => this.onSendError(err));
    this.timers.push(setInterval(() => this.checkInactivity(), Math.min(1000, opts.timeoutMs / 2)));
    this.timers.push(setInterval(() => this.sendRtcp(), opts.rtcpIntervalMs ?? 5000));
  }

  get localPort(): number {
    return this.opts.ports.port;
  }

  get remoteAddress(): string {
    return `${this.remote.address}:${this.remote.port}`;
  }

  private get sending(): boolean {
    return this.direction === 'sendrecv' || this.direction === 'sendonly';
  }

  private get expectingMedia(): boolean {
    // On hold (sendonly, inactive, c=0.0.0.0) a carrier may send nothing at all: no timeout then.
    return this.direction === 'sendrecv';
  }

  /** The ptime we send at (from the peer's a=ptime/a=maxptime). */
  get ptime(): number {
    return this.tx.bytesPerPacket / 8;
  }

  /** A re-INVITE changed the stream (hold/unhold, new address); the codec stays what we agreed. */
  update(offer: AudioOffer, direction: Direction): void {
    // c=0.0.0.0 (RFC 2543 hold) keeps the old destination: media resumes there or at the next offer's.
    const moved = offer.address !== this.offer.address || offer.port !== this.offer.port;
    if (!offer.nullAddress && moved) {
      this.remote = { address: offer.address, port: offer.port };
      this.remoteRtcp = { address: offer.address, port: offer.rtcpPort };
      this.latch.follow(offer.address);
    }
    if (sendPtime(offer) !== this.ptime) this.tx = new TxPacketizer(sendPtime(offer));
    this.offer = { ...offer, codec: this.offer.codec, payloadType: this.offer.payloadType };
    if (direction !== this.direction) this.log.info({ from: this.direction, to: direction }, 'media direction changed');
    this.direction = direction;
    this.lastRxAt = Date.now();
  }

  private onRtp(buf: Buffer, rinfo: RemoteInfo): void {
    const parsed = parseRtp(buf);
    if (!parsed.ok) {
      if (parsed.why === 'version') this.counters.badVersion++;
      else if (parsed.why === 'rtcp') return this.onRtcp(buf, rinfo);
      else this.counters.short++;
      return;
    }
    if (!this.latch.allows(rinfo.address)) return this.onForeign(rinfo);
    const p = parsed.pkt;
    const isAudio = p.payloadType === this.offer.payloadType;
    const isDtmf = this.offer.dtmfPayloadType !== undefined && p.payloadType === this.offer.dtmfPayloadType;
    const isCn = p.payloadType === (this.offer.cnPayloadType ?? CN_STATIC_PT);
    if (!isAudio && !isDtmf && !isCn) {
      this.counters.unknownPt++;
      return;
    }
    if (!this.acceptSource(rinfo)) return;
    this.lastRxAt = Date.now();
    this.received++;
    this.trackSeq(p.seq, p.ssrc);
    if (isDtmf) return this.onDtmf(p.timestamp, p.payload);
    if (isCn) {
      // RFC 3389: the first byte is the noise level in -dBov; play that until audio resumes.
      this.counters.comfortNoise++;
      this.cnLevel = p.payload.length > 0 ? p.payload[0]! & 0x7f : 127;
      return;
    }
    if (!acceptablePayload(p.payload.length)) {
      this.counters.badSize++;
      return;
    }
    this.cnLevel = undefined;
    const arrival = performance.now();
    const packetMs = p.payload.length / 8;
    if (packetMs > 20) this.jitter.ensureDepthMs(packetMs + 20);
    for (const f of this.reframer.push(p.timestamp, p.payload)) {
      this.jitter.push({
        seq: f.index & 0xffff,
        timestamp: f.timestamp,
        payload: f.payload,
        arrivalMs: arrival + f.offsetMs,
      });
    }
  }

  /** The media source policy: latch, re-latch after the latched source went quiet, count the rest. */
  private acceptSource(rinfo: RemoteInfo): boolean {
    const src = { address: rinfo.address, port: rinfo.port };
    const verdict = this.latch.check(src, performance.now());
    if (verdict === 'current') return true;
    if (verdict === 'foreign') {
      this.onForeign(rinfo);
      return false;
    }
    if (verdict === 'relatched') {
      this.counters.relatched++;
      this.reframer.restart();
      this.log.warn({ from: this.remoteAddress, to: `${src.address}:${src.port}` }, 'RTP source moved: re-latched');
    } else if (src.address !== this.remote.address || src.port !== this.remote.port) {
      this.log.info({ sdp: this.remoteAddress, actual: `${src.address}:${src.port}` }, 'RTP latched to actual source');
    }
    this.remote = src;
    this.remoteRtcp = { address: src.address, port: src.port + 1 };
    if (verdict === 'latched') this.emit('started');
    return true;
  }

  /** Counted always, logged at most once per 10 s per leg (a spray must not flood the logs). */
  private onForeign(rinfo: RemoteInfo): void {
    this.counters.foreign++;
    const n = this.foreignLog.take(Date.now());
    if (n !== undefined)
      this.log.warn(
        {
          from: `${rinfo.address}:${rinfo.port}`,
          latched: this.remoteAddress,
          packets: n,
          total: this.counters.foreign,
        },
        'RTP from a source outside the media policy (or contending with the latched one): dropped',
      );
  }

  private trackSeq(seq: number, ssrc: number): void {
    if (this.remoteSsrc !== ssrc) {
      if (this.remoteSsrc !== undefined) this.reframer.restart(); // a new stream: its own timestamps
      this.remoteSsrc = ssrc;
      this.baseSeq = seq;
      this.maxSeqExt = seq;
      return;
    }
    const cycle = this.maxSeqExt - (this.maxSeqExt & 0xffff);
    let ext = cycle + seq;
    if (ext - this.maxSeqExt > 0x8000) ext -= 0x10000;
    else if (this.maxSeqExt - ext > 0x8000) ext += 0x10000;
    if (ext > this.maxSeqExt) this.maxSeqExt = ext;
  }

  /** RFC 4733: one digit per event (keyed by RTP timestamp), reported on its first end packet. */
  private onDtmf(timestamp: number, payload: Buffer): void {
    const got = this.dtmfIn.read(timestamp, payload);
    if (!got) return;
    this.counters.dtmfReceived++;
    this.log.info({ digit: got.digit, ms: got.durationMs }, 'DTMF received');
    this.emit('dtmf', got.digit, got.durationMs);
  }

  private onRtcp(buf: Buffer, rinfo: RemoteInfo): void {
    if (buf.length < 8 || buf[0]! >> 6 !== 2) {
      this.counters.badVersion++;
      return;
    }
    if (!this.latch.allows(rinfo.address)) return this.onForeign(rinfo);
    this.counters.rtcpReceived++;
    this.lastRxAt = Date.now(); // RTCP says the far end is alive (e.g. silent behind VAD)
    if (rinfo.address === this.remote.address) this.remoteRtcp = { address: rinfo.address, port: rinfo.port };
    const middle = srNtpMiddle(buf);
    if (middle !== undefined) this.lastSr = { middle, at: Date.now() };
  }

  private checkInactivity(): void {
    if (this.closing || !this.expectingMedia) return;
    const idle = Date.now() - this.lastRxAt;
    if (idle >= this.opts.timeoutMs) {
      this.log.warn({ idleMs: idle }, 'no RTP from carrier: ending call');
      this.lastRxAt = Date.now(); // one hangup per timeout, even if the call takes a moment to end
      this.emit('hangup', { by: 'timeout', cause: 'rtp_timeout', detail: `no RTP for ${idle} ms` });
    }
  }

  private sendRtcp(): void {
    if (this.closing) return;
    let report;
    if (this.remoteSsrc !== undefined) {
      const expected = this.maxSeqExt - this.baseSeq + 1;
      const lost = Math.max(0, expected - this.received);
      const expInt = expected - this.lastRtcpExpected;
      const recInt = this.received - this.lastRtcpReceived;
      this.lastRtcpExpected = expected;
      this.lastRtcpReceived = this.received;
      const lostInt = expInt - recInt;
      report = {
        ssrc: this.remoteSsrc,
        fractionLost: expInt > 0 && lostInt > 0 ? Math.floor((lostInt * 256) / expInt) : 0,
        cumulativeLost: lost,
        highestSeq: this.maxSeqExt,
        jitter: (this.jitter.stats.jitterMs * 8000) / 1000,
        lsr: this.lastSr?.middle ?? 0,
        dlsr: this.lastSr ? Math.round(((Date.now() - this.lastSr.at) / 1000) * 65536) : 0,
      };
    }
    const sender =
      this.sent > 0 ? { rtpTimestamp: this.timestamp, packets: this.sent, octets: this.sentOctets } : undefined;
    if (!sender && !report) return;
    if (this.offer.nullAddress) return; // on RFC 2543 hold there is nowhere to send to
    if (this.safeSend(this.opts.ports.rtcp, buildRtcpReport(this.ssrc, sender, report), this.remoteRtcp))
      this.counters.rtcpSent++;
  }

  /**
   * Every datagram goes out through here: a destination a stranger or a bad SDP can make invalid
   * (port 0 or above 65535, 0.0.0.0) is skipped, and a synchronous throw from send() is caught —
   * this runs from timers, where a throw would take the whole process (every call) down.
   */
  private safeSend(sock: Socket, pkt: Buffer, to: Endpoint): boolean {
    if (!Number.isInteger(to.port) || to.port < 1 || to.port > 65535 || isNullAddress(to.address)) {
      this.counters.sendSkipped++;
      return false;
    }
    try {
      sock.send(pkt, to.port, to.address);
      return true;
    } catch (err) {
      this.onSendError(err as Error);
      return false;
    }
  }

  private onSendError(err: Error): void {
    this.counters.sendErrors++;
    const n = this.sendErrorLog.take(Date.now());
    if (n !== undefined) this.log.warn({ err: err.message, errors: n }, 'RTP socket error');
  }

  readFrame(): Buffer | null {
    if (this.closing) return null;
    const frame = this.jitter.pop();
    if (frame || this.cnLevel === undefined) return frame;
    return this.codec.encode(comfortNoisePcm(this.cnLevel));
  }

  writeFrame(frame: Buffer): void {
    if (this.closing) return;
    this.timestamp = (this.timestamp + SAMPLES) >>> 0;
    if (!this.sending) return this.tx.clear();
    if (this.dtmfOut.pending > 0 && this.offer.dtmfPayloadType !== undefined) {
      // The event replaces audio while it lasts.
      this.tx.clear();
      const ev = this.dtmfOut.step(this.timestamp)!;
      return this.send(this.offer.dtmfPayloadType, ev.timestamp, ev.payload, ev.marker);
    }
    for (const pkt of this.tx.push(frame, this.timestamp)) {
      this.send(this.offer.payloadType, pkt.timestamp, pkt.payload, this.firstPacket);
      this.firstPacket = false;
    }
  }

  private send(pt: number, ts: number, payload: Buffer, marker: boolean): void {
    this.seq = (this.seq + 1) & 0xffff;
    const pkt = buildRtp({ payloadType: pt, marker, seq: this.seq, timestamp: ts, ssrc: this.ssrc }, payload);
    if (!this.safeSend(this.opts.ports.rtp, pkt, this.remote)) return;
    this.sent++;
    this.sentOctets += payload.length;
  }

  /** Queue an RFC 4733 event; false when it cannot go out (unknown digit, no telephone-event negotiated). */
  sendDtmf(digit: string, durationMs = 160): boolean {
    if (this.offer.dtmfPayloadType === undefined) {
      this.log.warn({ digit }, 'cannot send DTMF: carrier did not offer telephone-event');
      return false;
    }
    // Bounded inside: a runaway caller cannot queue minutes of tones.
    return this.dtmfOut.enqueue(digit, durationMs);
  }

  quality(): LegQuality & { rtp: RtpCounters; remote: string } {
    return {
      jitter: { ...this.jitter.stats },
      packetsSent: this.sent,
      packetsReceived: this.received,
      rtp: { ...this.counters },
      remote: this.remoteAddress,
    };
  }

  /** Idempotent: stops timers, frees the port pair, then runs the front's signalling (BYE). */
  close(reason: HangupReason): Promise<void> {
    this.closing ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      this.log.info({ reason, ...this.quality() }, 'RTP leg closing');
      await this.opts.ports.release();
      try {
        await this.opts.onClose?.(reason);
      } finally {
        this.emit('closed');
      }
    })();
    return this.closing;
  }
}
