import { randomBytes, randomUUID } from 'node:crypto';
import type { RemoteInfo } from 'node:dgram';
import { createCodec } from '../core/audio/codecs.js';
import type { AudioFormat } from '../core/audio/format.js';
import { JitterBuffer } from '../core/jitter-buffer.js';
import type { Logger } from '../core/logger.js';
import type { HangupReason, LegQuality, MediaLeg, MediaLegEvents } from '../core/media-leg.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import { buildRtcpReport, buildRtp, DTMF_EVENTS, dtmfPayload, parseRtp, srNtpMiddle, type RtpPorts } from './rtp.js';
import { formatOf, type AudioOffer, type Direction } from './sdp.js';

const SAMPLES = 160; // 20 ms at 8 kHz

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
  /** Front signalling when the leg closes (BYE when the gateway/AI ended the call). */
  onClose?: (reason: HangupReason) => Promise<void>;
}

export interface RtpCounters {
  short: number;
  badVersion: number;
  unknownPt: number;
  foreign: number;
  rtcpReceived: number;
  rtcpSent: number;
  dtmfReceived: number;
}

/**
 * A carrier's G.711 audio over plain RTP: one UDP port pair per call, symmetric RTP (we send to
 * wherever the carrier's RTP actually comes from, since SBC/NAT addresses in SDP are often wrong),
 * RTCP SR/RR every 5 s, RFC 4733 DTMF both ways, and an inactivity timeout.
 */
export class RtpLeg extends TypedEmitter<MediaLegEvents> implements MediaLeg {
  readonly id = randomUUID();
  readonly callId: string;
  format: AudioFormat;
  private readonly log: Logger;
  private readonly jitter: JitterBuffer;
  private offer: AudioOffer;
  private direction: Direction;
  private remote: { address: string; port: number };
  private remoteRtcp: { address: string; port: number };
  private latched = false;
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
  private lastDtmfTs: number | undefined;
  private dtmfOut: { event: number; ts: number; frames: number; sentFrames: number; endSent: number }[] = [];
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
    this.jitter = new JitterBuffer({ clockRate: 8000, conceal: (last, lost) => codec.conceal(last, lost) });
    const { rtp, rtcp } = opts.ports;
    rtp.on('message', (buf, rinfo) => this.onRtp(buf, rinfo));
    rtcp.on('message', (buf, rinfo) => this.onRtcp(buf, rinfo));
    for (const s of [rtp, rtcp]) s.on('error', (err) => this.log.warn({ err: err.message }, 'RTP socket error'));
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
    // While the carrier holds us with `inactive` (or only receives), no RTP is due: no timeout.
    return this.direction === 'sendrecv' || this.direction === 'recvonly';
  }

  /** A re-INVITE changed the stream (hold/unhold, new address); the codec stays what we agreed. */
  update(offer: AudioOffer, direction: Direction): void {
    if (offer.address !== this.offer.address || offer.port !== this.offer.port) {
      this.remote = { address: offer.address, port: offer.port };
      this.remoteRtcp = { address: offer.address, port: offer.rtcpPort };
      this.latched = false;
    }
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
    const p = parsed.pkt;
    const isAudio = p.payloadType === this.offer.payloadType;
    const isDtmf = this.offer.dtmfPayloadType !== undefined && p.payloadType === this.offer.dtmfPayloadType;
    if (!isAudio && !isDtmf) {
      if (p.payloadType !== 13) this.counters.unknownPt++; // CN (13) is legal and silently ignored
      return;
    }
    if (!this.latched) {
      this.latched = true;
      if (rinfo.address !== this.remote.address || rinfo.port !== this.remote.port) {
        this.log.info(
          { sdp: this.remoteAddress, actual: `${rinfo.address}:${rinfo.port}` },
          'RTP latched to actual source',
        );
      }
      this.remote = { address: rinfo.address, port: rinfo.port };
      this.remoteRtcp = { address: rinfo.address, port: rinfo.port + 1 };
      this.emit('started');
    } else if (rinfo.address !== this.remote.address || rinfo.port !== this.remote.port) {
      this.counters.foreign++; // after latching, other sources are ignored (RTP injection)
      return;
    }
    this.lastRxAt = Date.now();
    this.received++;
    this.trackSeq(p.seq, p.ssrc);
    if (isDtmf) return this.onDtmf(p.timestamp, p.payload);
    if (p.payload.length !== SAMPLES) {
      this.counters.short++; // ptime other than 20 ms is not something our trunks send
      return;
    }
    this.jitter.push({ seq: p.seq, timestamp: p.timestamp, payload: p.payload, arrivalMs: performance.now() });
  }

  private trackSeq(seq: number, ssrc: number): void {
    if (this.remoteSsrc !== ssrc) {
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
    if (payload.length < 4) return;
    const end = (payload[1]! & 0x80) !== 0;
    if (!end || this.lastDtmfTs === timestamp) return;
    this.lastDtmfTs = timestamp;
    const digit = DTMF_EVENTS[payload[0]!];
    if (!digit) return;
    this.counters.dtmfReceived++;
    const ms = Math.round(payload.readUInt16BE(2) / 8);
    this.log.info({ digit, ms }, 'DTMF received');
    this.emit('dtmf', digit, ms);
  }

  private onRtcp(buf: Buffer, rinfo: RemoteInfo): void {
    if (buf.length < 8 || buf[0]! >> 6 !== 2) {
      this.counters.badVersion++;
      return;
    }
    this.counters.rtcpReceived++;
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
    this.opts.ports.rtcp.send(
      buildRtcpReport(this.ssrc, sender, report),
      this.remoteRtcp.port,
      this.remoteRtcp.address,
    );
    this.counters.rtcpSent++;
  }

  readFrame(): Buffer | null {
    return this.closing ? null : this.jitter.pop();
  }

  writeFrame(frame: Buffer): void {
    if (this.closing) return;
    this.timestamp = (this.timestamp + SAMPLES) >>> 0;
    if (!this.sending) return;
    const dtmf = this.dtmfOut[0];
    if (dtmf && this.offer.dtmfPayloadType !== undefined) return this.sendDtmfFrame(dtmf, this.offer.dtmfPayloadType);
    this.send(this.offer.payloadType, this.timestamp, frame, this.firstPacket);
    this.firstPacket = false;
  }

  private send(pt: number, ts: number, payload: Buffer, marker: boolean): void {
    this.seq = (this.seq + 1) & 0xffff;
    const pkt = buildRtp({ payloadType: pt, marker, seq: this.seq, timestamp: ts, ssrc: this.ssrc }, payload);
    this.opts.ports.rtp.send(pkt, this.remote.port, this.remote.address);
    this.sent++;
    this.sentOctets += payload.length;
  }

  /** One 20 ms step of an outgoing RFC 4733 event; the event replaces audio while it lasts. */
  private sendDtmfFrame(d: (typeof this.dtmfOut)[number], pt: number): void {
    if (d.sentFrames === 0) d.ts = this.timestamp;
    if (d.sentFrames < d.frames) {
      d.sentFrames++;
      this.send(pt, d.ts, dtmfPayload(d.event, false, 10, d.sentFrames * SAMPLES), d.sentFrames === 1);
      return;
    }
    // The end packet goes out three times (RFC 4733 §2.5.1.4) with the same duration.
    this.send(pt, d.ts, dtmfPayload(d.event, true, 10, d.frames * SAMPLES), false);
    if (++d.endSent >= 3) this.dtmfOut.shift();
  }

  sendDtmf(digit: string, durationMs = 160): void {
    const event = DTMF_EVENTS.indexOf(digit.toUpperCase());
    if (event < 0 || digit.length !== 1) return;
    if (this.offer.dtmfPayloadType === undefined) {
      this.log.warn({ digit }, 'cannot send DTMF: carrier did not offer telephone-event');
      return;
    }
    this.dtmfOut.push({ event, ts: 0, frames: Math.max(2, Math.round(durationMs / 20)), sentFrames: 0, endSent: 0 });
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
