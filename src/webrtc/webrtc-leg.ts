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
/** 20 ms at Opus's 48 kHz RTP clock (RFC 7587: always 48000, whatever the audio bandwidth). */
const SAMPLES_PER_FRAME = 960;
const DTMF_EVENTS = '0123456789*#ABCD';

function codecs(opusPt: number, tePt: number | undefined): RTCRtpCodecParameters[] {
  const list = [
    new RTCRtpCodecParameters({
      mimeType: 'audio/opus',
      clockRate: 48000,
      channels: 2,
      payloadType: opusPt,
      parameters: 'minptime=20;useinbandfec=1',
    }),
  ];
  if (tePt !== undefined) {
    list.push(
      new RTCRtpCodecParameters({ mimeType: 'audio/telephone-event', clockRate: 8000, channels: 1, payloadType: tePt }),
    );
  }
  return list;
}

/**
 * One WhatsApp call's media: a werift RTCPeerConnection (ICE, DTLS-SRTP, RTCP mux) carrying
 * Opus 48 kHz and RFC 4733 DTMF. Frames are Opus packets: inbound RTP goes through the core
 * jitter buffer, and every frame the bridge writes (silence included, no DTX) becomes one RTP
 * packet with its own sequence number and +960 timestamp, so WhatsApp never sees a media gap.
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
  private tePt: number | undefined = TELEPHONE_EVENT_PT;
  private seq = randomInt(0, 0x10000);
  private timestamp = randomInt(0, 2 ** 32);
  private firstPacket = true;
  private sent = 0;
  private notSent = 0;
  private received = 0;
  private lastRxAt = 0;
  private lastDtmfTs: number | undefined;
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
    const leg = new WebRtcLeg(opts, codecs(offer.opusPt, offer.telephoneEventPt));
    leg.opusPt = offer.opusPt;
    leg.tePt = offer.telephoneEventPt;
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
      leg.log.info({ opusPt: leg.opusPt, tePt: leg.tePt, candidates: offer.candidates }, 'WebRTC answer built');
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
    const leg = new WebRtcLeg(opts, codecs(OPUS_PT, TELEPHONE_EVENT_PT));
    leg.transceiver = leg.pc.addTransceiver(leg.track, { direction: 'sendrecv' });
    await leg.pc.setLocalDescription(await leg.pc.createOffer());
    return { leg, offerSdp: shapeLocalSdp(leg.pc.localDescription!.sdp, opts.callId) };
  }

  async acceptAnswer(answerSdp: string): Promise<void> {
    const info = inspectRemoteSdp(answerSdp, this.callId);
    this.opusPt = info.opusPt;
    this.tePt = info.telephoneEventPt;
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
      } else if (header.payloadType === this.tePt) {
        this.onTelephoneEvent(header.timestamp, payload);
      }
    } catch (err) {
      // A malformed packet must never take the process down.
      this.log.debug({ err: (err as Error).message }, 'bad RTP packet dropped');
    }
  }

  /** RFC 4733: one digit per event (keyed by timestamp), reported on its first end packet. */
  private onTelephoneEvent(timestamp: number, payload: Buffer): void {
    if (payload.length < 4) return;
    const end = (payload[1]! & 0x80) !== 0;
    if (!end || this.lastDtmfTs === timestamp) return;
    this.lastDtmfTs = timestamp;
    const digit = DTMF_EVENTS[payload[0]!];
    if (digit) this.emit('dtmf', digit, Math.round(payload.readUInt16BE(2) / 8));
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
    this.seq = (this.seq + 1) & 0xffff;
    this.timestamp = (this.timestamp + SAMPLES_PER_FRAME) >>> 0;
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

  quality(): LegQuality & { notSent: number } {
    return {
      jitter: { ...this.jitter.stats },
      packetsSent: this.sent,
      packetsReceived: this.received,
      notSent: this.notSent,
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
