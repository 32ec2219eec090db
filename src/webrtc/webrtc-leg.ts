import { randomInt, randomUUID } from 'node:crypto';
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RtpHeader,
  RtpPacket,
  type RTCRtpTransceiver,
} from 'werift';
import { createCodec } from '../core/audio/codecs.js';
import { OPUS_48K, type AudioFormat } from '../core/audio/format.js';
import { GatewayError } from '../core/errors.js';
import { JitterBuffer } from '../core/jitter-buffer.js';
import { TelephoneEventReader, TelephoneEventSender } from '../core/telephone-event.js';
import type { Logger } from '../core/logger.js';
import type { HangupReason, LegQuality, MediaLeg, MediaLegEvents } from '../core/media-leg.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import { inspectRemoteSdp, shapeLocalSdp } from './sdp.js';

export interface WebRtcLegOptions {
  callId: string;
  log: Logger;
  /** Address written into our ICE candidate (1:1 NAT: the public address of this host). */
  publicIp: string;
  /** UDP ports the ICE socket may take. */
  portRange: [number, number];
  /** Once media has flowed, hang up after this long with no RTP from the far end. */
  inactivityMs: number;
  /** Front signalling run from close() (Graph terminate when the gateway ended the call). */
  onClose?: (reason: HangupReason) => Promise<void>;
}

/** ICE consent-freshness counters on the selected pair (RFC 7675), for tests and diagnostics. */
export interface IceConsentStats {
  selectedPair: string | undefined;
  consentRequestsSent: number;
  requestsReceived: number;
  responsesReceived: number;
  responsesSent: number;
}

const OPUS_PT = 111;
const TELEPHONE_EVENT_PT = 126;
/** What WhatsApp offers for DTMF (telephone-event/8000); we offer the same on business-initiated calls. */
const TELEPHONE_EVENT_RATE = 8000;
/** 20 ms at Opus's 48 kHz RTP clock (RFC 7587: always 48000, whatever the audio bandwidth). */
const SAMPLES_PER_FRAME = 960;

interface TelephoneEventFormat {
  pt: number;
  rate: number;
}

function codecs(opusPt: number, te: TelephoneEventFormat | undefined): RTCRtpCodecParameters[] {
  const list = [
    new RTCRtpCodecParameters({
      mimeType: 'audio/opus',
      clockRate: 48000,
      channels: 2,
      payloadType: opusPt,
      parameters: 'minptime=20;useinbandfec=1',
    }),
  ];
  if (te !== undefined) {
    list.push(
      new RTCRtpCodecParameters({
        mimeType: 'audio/telephone-event',
        clockRate: te.rate,
        channels: 1,
        payloadType: te.pt,
      }),
    );
  }
  return list;
}

/**
 * One WhatsApp call's media: a werift RTCPeerConnection (ICE, DTLS-SRTP, RTCP mux) carrying
 * Opus 48 kHz and RFC 4733 DTMF. Frames are Opus packets: inbound RTP goes through the core
 * jitter buffer, and every frame the bridge writes (silence included, no DTX) becomes one RTP
 * packet with its own sequence number and +960 timestamp, so WhatsApp never sees a media gap.
 * Keypad digits go both ways as RFC 4733 telephone-events on the Opus stream's SSRC, timed in the
 * telephone-event payload's own clock (WhatsApp negotiates 8000 Hz).
 */
export class WebRtcLeg extends TypedEmitter<MediaLegEvents> implements MediaLeg {
  readonly id = randomUUID();
  readonly callId: string;
  readonly format: AudioFormat = OPUS_48K;
  private readonly pc: RTCPeerConnection;
  private readonly track = new MediaStreamTrack({ kind: 'audio' });
  private readonly jitter: JitterBuffer;
  private readonly log: Logger;
  private opusPt = OPUS_PT;
  private te: TelephoneEventFormat | undefined = { pt: TELEPHONE_EVENT_PT, rate: TELEPHONE_EVENT_RATE };
  private dtmfIn = new TelephoneEventReader(TELEPHONE_EVENT_RATE);
  private dtmfOut = new TelephoneEventSender(TELEPHONE_EVENT_RATE);
  /** The send clock in the telephone-event rate: advances with every 20 ms frame, like `timestamp`. */
  private eventTimestamp = randomInt(0, 2 ** 32);
  private dtmfSent = 0;
  private seq = randomInt(0, 0x10000);
  private timestamp = randomInt(0, 2 ** 32);
  private firstPacket = true;
  private sent = 0;
  private notSent = 0;
  private received = 0;
  private lastRxAt = 0;
  private inactivityTimer: NodeJS.Timeout | undefined;
  private connected = false;
  private closing: Promise<void> | undefined;
  private transceiver: RTCRtpTransceiver | undefined;
  /** False for a receive-only far end (operator listen-in): no RTP is due from it. */
  private expectsRtp = true;
  /** An Opus frame of silence: what a DTX pause sounds like to the bridge. */
  private readonly silence: Buffer;

  private constructor(
    private readonly opts: WebRtcLegOptions,
    pcCodecs: RTCRtpCodecParameters[],
  ) {
    super();
    this.callId = opts.callId;
    this.log = opts.log.child({ leg: 'webrtc' });
    const conceal = createCodec(OPUS_48K, 48000, opts.callId);
    this.silence = conceal.silence();
    this.jitter = new JitterBuffer({ clockRate: 48000, conceal: (last, lost) => conceal.conceal(last, lost) });
    this.pc = new RTCPeerConnection({
      codecs: { audio: pcCodecs },
      // One host candidate on the configured address: no interface enumeration, no STUN. The
      // socket binds to all interfaces on a port from the range, so 1:1 NAT (publicIp:port →
      // this host:port) works without rewriting candidates.
      iceUseIpv4: false,
      iceUseIpv6: false,
      iceAdditionalHostAddresses: [opts.publicIp],
      icePortRange: opts.portRange,
      iceServers: [],
      bundlePolicy: 'max-bundle',
    });
    this.pc.onTrack.subscribe((track) => track.onReceiveRtp.subscribe((rtp) => this.onRtp(rtp)));
    this.pc.connectionStateChange.subscribe((state) => this.onState(state));
  }

  /** Answer a WhatsApp offer. Throws GatewayError when the offer has no Opus. */
  static async answer(offerSdp: string, opts: WebRtcLegOptions): Promise<{ leg: WebRtcLeg; answerSdp: string }> {
    const offer = inspectRemoteSdp(offerSdp, opts.callId);
    const te = eventFormat(offer);
    const leg = new WebRtcLeg(opts, codecs(offer.opusPt, te));
    leg.opusPt = offer.opusPt;
    leg.useEventFormat(te);
    try {
      await leg.pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
      leg.transceiver = leg.pc.getTransceivers().find((t) => t.kind === 'audio');
      if (!leg.transceiver) throw new GatewayError('unknown_codec', 'offer has no audio transceiver', opts.callId);
      // A recvonly offer (a listen-in browser) gets sendonly (RFC 3264 §6.1); it sends us no RTP,
      // so ICE consent freshness, not RTP inactivity, tells us it has gone.
      leg.expectsRtp = offer.direction !== 'recvonly';
      leg.transceiver.setDirection(leg.expectsRtp ? 'sendrecv' : 'sendonly');
      await leg.transceiver.sender.replaceTrack(leg.track);
      await leg.pc.setLocalDescription(await leg.pc.createAnswer());
      const answerSdp = shapeLocalSdp(leg.pc.localDescription!.sdp, opts.callId);
      leg.log.info({ opusPt: leg.opusPt, telephoneEvent: te, candidates: offer.candidates }, 'WebRTC answer built');
      return { leg, answerSdp };
    } catch (err) {
      await leg.pc.close().catch(() => {});
      throw err instanceof GatewayError
        ? err
        : new GatewayError('invalid_state', `could not answer offer: ${(err as Error).message}`, opts.callId, {
            cause: err,
          });
    }
  }

  /** Our offer for a business-initiated call; apply WhatsApp's answer with acceptAnswer(). */
  static async offer(opts: WebRtcLegOptions): Promise<{ leg: WebRtcLeg; offerSdp: string }> {
    const leg = new WebRtcLeg(opts, codecs(OPUS_PT, { pt: TELEPHONE_EVENT_PT, rate: TELEPHONE_EVENT_RATE }));
    leg.transceiver = leg.pc.addTransceiver(leg.track, { direction: 'sendrecv' });
    await leg.pc.setLocalDescription(await leg.pc.createOffer());
    return { leg, offerSdp: shapeLocalSdp(leg.pc.localDescription!.sdp, opts.callId) };
  }

  async acceptAnswer(answerSdp: string): Promise<void> {
    const info = inspectRemoteSdp(answerSdp, this.callId);
    this.opusPt = info.opusPt;
    this.useEventFormat(eventFormat(info));
    await this.pc.setRemoteDescription({ type: 'answer', sdp: answerSdp });
  }

  /** Resolves once ICE is connected and DTLS is done; rejects on failure, close or timeout. */
  waitConnected(timeoutMs: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sub.unSubscribe();
        reject(
          new GatewayError(
            'timeout',
            `media not connected after ${timeoutMs} ms (ICE ${this.pc.iceConnectionState}, peer ${this.pc.connectionState})`,
            this.callId,
          ),
        );
      }, timeoutMs);
      const sub = this.pc.connectionStateChange.subscribe((state) => {
        if (state === 'connected') {
          clearTimeout(timer);
          sub.unSubscribe();
          resolve();
        } else if (state === 'failed' || state === 'closed') {
          clearTimeout(timer);
          sub.unSubscribe();
          reject(new GatewayError('leg_closed', `media ${state} before connecting`, this.callId));
        }
      });
    });
  }

  private onState(state: string): void {
    this.log.debug({ state, ice: this.pc.iceConnectionState }, 'WebRTC state');
    if (state === 'connected' && !this.connected) {
      this.connected = true;
      this.lastRxAt = Date.now();
      this.log.info({ pair: this.consentStats().selectedPair }, 'WebRTC media connected (ICE + DTLS)');
      if (this.expectsRtp) this.inactivityTimer = setInterval(() => this.checkInactivity(), 1000);
      this.emit('started');
    } else if (state === 'failed' && this.connected && !this.closing) {
      // After connecting, `failed` means consent to send expired (RFC 7675): our media path is dead,
      // whatever the far end thinks, so the gateway ends the call and Meta must be told (terminate).
      this.log.warn({ consent: this.consentStats() }, 'ICE consent expired: ending call');
      this.emit('hangup', { by: 'error', cause: 'ice_consent_failed', detail: 'ICE consent to send expired' });
    }
  }

  private checkInactivity(): void {
    const idle = Date.now() - this.lastRxAt;
    if (idle >= this.opts.inactivityMs && !this.closing) {
      this.log.warn({ idleMs: idle }, 'no RTP from WhatsApp: ending call');
      this.emit('hangup', { by: 'timeout', cause: 'media_timeout', detail: `no RTP for ${idle} ms` });
    }
  }

  private onRtp(rtp: RtpPacket): void {
    try {
      this.lastRxAt = Date.now();
      const { header, payload } = rtp;
      if (header.payloadType === this.opusPt) {
        if (payload.length === 0) return;
        this.received++;
        this.jitter.push({
          seq: header.sequenceNumber,
          timestamp: header.timestamp,
          payload,
          arrivalMs: performance.now(),
        });
      } else if (header.payloadType === this.te?.pt) {
        const got = this.dtmfIn.read(header.timestamp, payload);
        if (got) {
          this.log.info(got, 'DTMF received');
          this.emit('dtmf', got.digit, got.durationMs);
        }
      }
    } catch (err) {
      // A malformed packet must never take the process down.
      this.log.debug({ err: (err as Error).message }, 'bad RTP packet dropped');
    }
  }

  /** The negotiated telephone-event format (none: no keypad either way). */
  private useEventFormat(te: TelephoneEventFormat | undefined): void {
    this.te = te;
    if (!te) return;
    this.dtmfIn = new TelephoneEventReader(te.rate);
    this.dtmfOut = new TelephoneEventSender(te.rate);
  }

  /**
   * WhatsApp clients use Opus DTX: while the user is silent they send nothing (a frame per 400 ms at
   * most), and the jitter buffer pauses. Once media has flowed, such a pause is silence and the AI
   * must hear it as silence, in real time: its VAD ends the user's turn on it.
   */
  readFrame(): Buffer | null {
    if (this.closing) return null;
    const frame = this.jitter.pop();
    return frame || this.received === 0 ? frame : this.silence;
  }

  writeFrame(frame: Buffer): void {
    if (this.closing) return;
    if (!this.connected) {
      this.notSent++;
      return;
    }
    this.timestamp = (this.timestamp + SAMPLES_PER_FRAME) >>> 0;
    this.eventTimestamp = (this.eventTimestamp + this.dtmfOut.clockRate / 50) >>> 0;
    if (this.te && this.dtmfOut.pending > 0) return this.writeEvent(this.te.pt);
    this.seq = (this.seq + 1) & 0xffff;
    const header = new RtpHeader({
      sequenceNumber: this.seq,
      timestamp: this.timestamp,
      payloadType: this.opusPt,
      marker: this.firstPacket,
    });
    this.firstPacket = false;
    this.track.writeRtp(new RtpPacket(header, frame));
    this.sent++;
  }

  /**
   * While a digit plays its RFC 4733 packets replace the Opus frames (as libwebrtc does). werift's
   * track would rewrite the payload type to Opus's, so they go to the DTLS transport directly with
   * the sender's SSRC and our one sequence: WhatsApp sees one stream with no sequence gap.
   */
  private writeEvent(pt: number): void {
    const pkt = this.dtmfOut.step(this.eventTimestamp);
    const sender = this.transceiver?.sender;
    if (!pkt || !sender) return;
    this.seq = (this.seq + 1) & 0xffff;
    const header = new RtpHeader({
      sequenceNumber: this.seq,
      timestamp: pkt.timestamp,
      payloadType: pt,
      marker: pkt.marker,
      ssrc: sender.ssrc,
    });
    sender.dtlsTransport.sendRtp(pkt.payload, header).then(
      () => this.dtmfSent++,
      (err: Error) => this.log.debug({ err: err.message }, 'telephone-event packet not sent'),
    );
  }

  /** Queue one keypad digit as an RFC 4733 event; false when WhatsApp negotiated no telephone-event. */
  sendDtmf(digit: string, durationMs = 160): boolean {
    if (this.closing) return false;
    if (!this.te) {
      this.log.warn({ digit }, 'cannot send DTMF: the WhatsApp SDP has no telephone-event');
      return false;
    }
    const queued = this.dtmfOut.enqueue(digit, durationMs);
    if (queued) this.log.info({ digit, durationMs, rate: this.te.rate }, 'DTMF queued');
    return queued;
  }

  consentStats(): IceConsentStats {
    const pair = this.pc.iceTransports[0]?.connection.nominated;
    return {
      selectedPair: pair
        ? `${pair.localCandidate.host}:${pair.localCandidate.port} ⇄ ${pair.remoteAddr.join(':')}`
        : undefined,
      consentRequestsSent: pair?.consentRequestsSent ?? 0,
      requestsReceived: pair?.requestsReceived ?? 0,
      responsesReceived: pair?.responsesReceived ?? 0,
      responsesSent: pair?.responsesSent ?? 0,
    };
  }

  quality(): LegQuality & { notSent: number; dtmfPacketsSent: number } {
    return {
      jitter: { ...this.jitter.stats },
      packetsSent: this.sent,
      packetsReceived: this.received,
      notSent: this.notSent,
      dtmfPacketsSent: this.dtmfSent,
    };
  }

  /** The far end ended the call in signalling (a Graph terminate webhook): the leg's owner hears a hangup. */
  remoteHangup(reason: HangupReason): void {
    this.emit('hangup', reason);
  }

  /** Idempotent: stops timers, closes the peer connection (its socket), then runs front signalling. */
  close(reason: HangupReason): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.inactivityTimer);
      const consent = this.consentStats();
      this.log.info({ reason, ...this.quality(), consent }, 'WebRTC leg closing');
      try {
        this.track.stop();
        // Bounded: a wedged DTLS/ICE close must not hold up the call's other cleanups.
        await Promise.race([this.pc.close(), new Promise((r) => setTimeout(r, 3000).unref())]);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'peer connection close failed');
      }
      try {
        await this.opts.onClose?.(reason);
      } finally {
        this.emit('closed');
      }
    })();
    return this.closing;
  }
}

function eventFormat(info: {
  telephoneEventPt?: number;
  telephoneEventRate?: number;
}): TelephoneEventFormat | undefined {
  return info.telephoneEventPt !== undefined && info.telephoneEventRate !== undefined
    ? { pt: info.telephoneEventPt, rate: info.telephoneEventRate }
    : undefined;
}
