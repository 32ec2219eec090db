import { concatPcm } from '../../../src/core/audio/level.js';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import opusModule from '@discordjs/opus';
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RtpHeader,
  RtpPacket,
  type RTCRtpTransceiver,
} from 'werift';
import { speak } from '../../../src/ai/local/tts.js';
import type { GraphStub } from './graph-stub.js';
import { UdpRelay, type RelayOptions } from './relay.js';
import { callsEnvelope, deliverWebhook } from './webhook-body.js';

const { OpusEncoder } = opusModule;

export interface UserOptions {
  /** Full URL of the gateway's webhook, e.g. http://127.0.0.1:8080/webhooks/whatsapp */
  webhookUrl: string;
  appSecret: string;
  graph: GraphStub;
  /** The user's WhatsApp number (digits, as Meta sends it). */
  number: string;
  /** The business number the user calls. */
  businessNumber?: string;
  /** Its phone-number ID (metadata.phone_number_id); default the Graph stand-in's first number. */
  phoneNumberId?: string;
  name?: string;
  /**
   * Reach the gateway the way users behind NAT or Meta's relays do (user-initiated calls): the offer
   * carries only a `typ relay` candidate, or an unreachable host plus a `typ srflx` one, and all
   * packets cross a UDP relay that can drop RTP. Without it: a host candidate on 127.0.0.1.
   */
  network?: { candidates: 'relay' | 'srflx' } & RelayOptions;
  /** Opus DTX as WhatsApp clients send it: silent frames are not sent (one every 400 ms at most). */
  dtx?: boolean;
}

/** One RTP packet the user received, with its arrival time. */
export interface Arrival {
  at: number;
  seq: number;
  timestamp: number;
  marker: boolean;
  payloadType: number;
  ssrc: number;
  payload: Buffer;
}

/** One RFC 4733 packet the user received, decoded. */
export interface ReceivedEvent {
  digit: string;
  end: boolean;
  /** In the telephone-event clock's units (8000 Hz here). */
  duration: number;
  timestamp: number;
  marker: boolean;
  seq: number;
  ssrc: number;
}

/** espeak-ng speech as 20 ms frames at 48 kHz, then silence: a source for startSending(). */
export async function speechSource(text: string): Promise<{ frames: number; source: (i: number) => Int16Array }> {
  const pcm = await speak(text, 48000);
  const frames = Math.ceil(pcm.length / 960);
  return {
    frames,
    source: (i) => {
      const out = new Int16Array(960);
      if (i < frames) out.set(pcm.subarray(i * 960, Math.min(pcm.length, (i + 1) * 960)));
      return out;
    },
  };
}

const OPUS_PT = 111;
const TE_PT = 126;
/** opus_defines.h: OPUS_SET_DTX_REQUEST. */
const OPUS_SET_DTX = 4016;

/** A UDP port nothing listens on (an unreachable "private" host candidate). */
async function deadPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The m=audio line's default address and the candidates, replaced (RFC 8839 default candidate). */
function withCandidates(sdp: string, candidates: string[], port: number): string {
  return sdp
    .replace(/a=candidate:[^\r\n]*\r\n/g, '')
    .replace(/a=end-of-candidates\r\n/g, '')
    .replace(/^m=audio \d+ /m, `m=audio ${port} `)
    .replace(/^c=IN IP4 [^\r\n]+/gm, 'c=IN IP4 127.0.0.1')
    .replace(/(a=rtcp-mux\r\n)/, `$1${candidates.map((c) => `a=candidate:${c}\r\n`).join('')}`);
}

/** The first UDP IPv4 candidate's address in an SDP. */
function firstCandidate(sdp: string): { address: string; port: number } {
  const m = /a=candidate:\S+ 1 udp \d+ (\d+\.\d+\.\d+\.\d+) (\d+) typ/i.exec(sdp);
  if (!m) throw new Error('SDP has no UDP IPv4 candidate');
  return { address: m[1]!, port: Number(m[2]) };
}

export { callsEnvelope, signBody } from './webhook-body.js';

/**
 * A simulated WhatsApp user: a werift peer that offers like the WhatsApp client (Opus/48000/2 with
 * in-band FEC, telephone-event, actpass, sha-256, host candidates), reaches the gateway through
 * signed webhooks, completes ICE/DTLS with the answer the gateway sent to the Graph stand-in,
 * streams Opus audio on a steady 20 ms clock and records what arrives (with arrival times).
 */
export class WhatsAppUser {
  readonly pc: RTCPeerConnection;
  readonly arrivals: Arrival[] = [];
  /** STUN binding requests the gateway sent us (ICE checks, then RFC 7675 consent checks). */
  readonly stunRequests: number[] = [];
  waCallId: string;
  private readonly track = new MediaStreamTrack({ kind: 'audio' });
  private readonly encoder = new OpusEncoder(48000, 1);
  private sendTimer: NodeJS.Timeout | undefined;
  private seq = Math.floor(Math.random() * 0xffff);
  private ts = Math.floor(Math.random() * 0xffffffff);
  sentPackets = 0;
  /** While false the user answers no STUN checks: the gateway's ICE consent expires (RFC 7675). */
  private consent = true;
  private transceiver: RTCRtpTransceiver | undefined;
  /** The relay between us and the gateway (opts.network). */
  relay: UdpRelay | undefined;
  /** Frames DTX left unsent. */
  dtxSkipped = 0;

  constructor(readonly opts: UserOptions) {
    this.waCallId = `wacid.${randomBytes(16).toString('base64url')}`;
    if (opts.dtx) this.encoder.applyEncoderCTL(OPUS_SET_DTX, 1);
    this.pc = new RTCPeerConnection({
      codecs: {
        audio: [
          new RTCRtpCodecParameters({
            mimeType: 'audio/opus',
            clockRate: 48000,
            channels: 2,
            payloadType: OPUS_PT,
            parameters: 'minptime=20;useinbandfec=1',
          }),
          new RTCRtpCodecParameters({
            mimeType: 'audio/telephone-event',
            clockRate: 8000,
            channels: 1,
            payloadType: TE_PT,
          }),
        ],
      },
      iceUseIpv4: false,
      iceUseIpv6: false,
      iceAdditionalHostAddresses: ['127.0.0.1'],
      iceFilterStunResponse: () => {
        this.stunRequests.push(Date.now());
        return this.consent;
      },
    });
    this.pc.onTrack.subscribe((t) =>
      t.onReceiveRtp.subscribe((rtp) =>
        this.arrivals.push({
          at: performance.now(),
          seq: rtp.header.sequenceNumber,
          timestamp: rtp.header.timestamp,
          marker: rtp.header.marker,
          payloadType: rtp.header.payloadType,
          ssrc: rtp.header.ssrc,
          payload: rtp.payload,
        }),
      ),
    );
  }

  get business(): string {
    return this.opts.businessNumber ?? '15550783881';
  }

  get phoneNumberId(): string {
    return this.opts.phoneNumberId ?? this.opts.graph.phoneNumberId;
  }

  /** Stop answering the gateway's consent checks, media still flowing (a NAT binding gone one way). */
  withdrawConsent(): void {
    this.consent = false;
  }

  /** POST a signed body to the gateway's webhook. */
  async postWebhook(body: unknown, opts: { signature?: string | null; tamper?: boolean } = {}): Promise<number> {
    return deliverWebhook(this.opts.webhookUrl, this.opts.appSecret, body, {
      signature: opts.signature,
      tamper: opts.tamper ? (raw) => raw.replace(this.opts.number, `${this.opts.number.slice(0, -1)}9`) : undefined,
    });
  }

  /** A user-initiated call: our offer, as a `connect` webhook. Returns the webhook's HTTP status. */
  async createOffer(): Promise<string> {
    this.transceiver = this.pc.addTransceiver(this.track, { direction: 'sendrecv' });
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const sdp = this.pc.localDescription!.sdp;
    const net = this.opts.network;
    if (!net) return sdp;
    // What the gateway sees: only the relay's address (relay), or a host that never answers plus
    // the NAT's mapping of it (srflx); every packet crosses the relay.
    this.relay = new UdpRelay(firstCandidate(sdp), net);
    await this.relay.start();
    const mapped = this.relay.netAddress;
    const host = { address: '127.0.0.1', port: await deadPort() };
    const candidates =
      net.candidates === 'relay'
        ? [`1 1 udp 16777215 ${mapped.address} ${mapped.port} typ relay raddr ${host.address} rport ${host.port}`]
        : [
            `1 1 udp 2122260223 ${host.address} ${host.port} typ host`,
            `2 1 udp 1686052607 ${mapped.address} ${mapped.port} typ srflx raddr ${host.address} rport ${host.port}`,
          ];
    return withCandidates(sdp, candidates, mapped.port);
  }

  /** The gateway's answer as our peer connection sees it: through the relay when there is one. */
  private viaRelay(answer: string): string {
    if (!this.relay) return answer;
    this.relay.setGateway(firstCandidate(answer));
    const a = this.relay.userAddress;
    return withCandidates(answer, [`1 1 udp 2130706431 ${a.address} ${a.port} typ host`], a.port);
  }

  connectWebhook(sdp: string, opts: { timestamp?: string } = {}): Record<string, unknown> {
    this.opts.graph.offered(this.waCallId, this.phoneNumberId, {
      user: this.opts.number,
      business: this.business,
      sdp,
    });
    return callsEnvelope(
      this.phoneNumberId,
      this.business,
      [
        {
          id: this.waCallId,
          from: this.opts.number,
          to: this.business,
          event: 'connect',
          timestamp: opts.timestamp ?? String(Math.floor(Date.now() / 1000)),
          direction: 'USER_INITIATED',
          session: { sdp_type: 'offer', sdp },
        },
      ],
      { contacts: [{ profile: { name: this.opts.name ?? 'Test User' }, wa_id: this.opts.number }] },
    );
  }

  /** Place a call: offer → webhook → answer from the gateway's pre_accept → ICE/DTLS connected (a loaded box can take seconds). */
  async call(timeoutMs = 30_000): Promise<void> {
    const sdp = await this.createOffer();
    const status = await this.postWebhook(this.connectWebhook(sdp));
    if (status !== 200) throw new Error(`connect webhook answered ${status}`);
    const pre = await this.opts.graph.waitFor('pre_accept', this.waCallId, timeoutMs);
    const answer = (pre.body.session as { sdp: string }).sdp;
    await this.pc.setRemoteDescription({ type: 'answer', sdp: this.viaRelay(answer) });
    await this.waitConnected(timeoutMs);
  }

  /** Business-initiated: answer the gateway's offer and post the `connect` webhook with our answer. */
  async answerBusinessCall(offerSdp: string, waCallId: string, extra: Record<string, unknown> = {}): Promise<void> {
    this.opts.graph.answered(waCallId);
    await this.pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
    this.transceiver = this.pc.getTransceivers()[0];
    this.transceiver!.setDirection('sendrecv');
    await this.transceiver!.sender.replaceTrack(this.track);
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    const calls = [
      {
        id: waCallId,
        from: this.business,
        to: this.opts.number,
        event: 'connect',
        timestamp: String(Math.floor(Date.now() / 1000)),
        direction: 'BUSINESS_INITIATED',
        session: { sdp_type: 'answer', sdp: this.pc.localDescription!.sdp },
        ...extra,
      },
    ];
    await this.postWebhook(callsEnvelope(this.phoneNumberId, this.business, calls));
  }

  /** A business-initiated call status webhook (RINGING / ACCEPTED / REJECTED). */
  async postStatus(waCallId: string, status: string): Promise<number> {
    const statuses = [
      {
        id: waCallId,
        type: 'call',
        status,
        timestamp: String(Math.floor(Date.now() / 1000)),
        recipient_id: this.opts.number,
      },
    ];
    return this.postWebhook(callsEnvelope(this.phoneNumberId, this.business, [], { statuses }));
  }

  waitConnected(timeoutMs: number): Promise<void> {
    if (this.pc.connectionState === 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sub.unSubscribe();
        reject(new Error(`user peer not connected in ${timeoutMs} ms (${this.pc.connectionState})`));
      }, timeoutMs);
      const sub = this.pc.connectionStateChange.subscribe((s) => {
        if (s !== 'connected' && s !== 'failed' && s !== 'closed') return;
        clearTimeout(timer);
        sub.unSubscribe();
        // Fail fast with the real reason (e.g. the gateway's DTLS gave up and it ended the call).
        if (s === 'connected') resolve();
        else reject(new Error(`user peer ${s} before connecting`));
      });
    });
  }

  /**
   * Stream audio: `source(i)` gives the i-th 20 ms frame (960 samples at 48 kHz), Opus-encoded and
   * sent on a drift-corrected 20 ms clock (like a phone's audio thread).
   */
  startSending(source: (frame: number) => Int16Array | Buffer): void {
    const t0 = performance.now();
    let i = 0;
    let talkspurt = true;
    const step = () => {
      while (performance.now() - t0 >= i * 20) {
        const pcm = source(i);
        // A Buffer is an already-encoded Opus packet (load tests reuse a pre-encoded loop).
        const opus = Buffer.isBuffer(pcm)
          ? pcm
          : this.encoder.encode(Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength));
        this.ts = (this.ts + 960) >>> 0;
        i++;
        // DTX: the encoder marks frames it wants left out with a 1-2 byte packet (as libwebrtc does,
        // those are not sent); the timestamp still advances, so the far end sees the pause.
        if (this.opts.dtx && opus.length <= 2) {
          this.dtxSkipped++;
          talkspurt = true;
          continue;
        }
        this.seq = (this.seq + 1) & 0xffff;
        const header = new RtpHeader({
          sequenceNumber: this.seq,
          timestamp: this.ts,
          payloadType: OPUS_PT,
          marker: talkspurt, // RFC 3551: the first packet of a talkspurt
        });
        talkspurt = false;
        this.track.writeRtp(new RtpPacket(header, opus));
        this.sentPackets++;
      }
      this.sendTimer = setTimeout(step, Math.max(1, t0 + i * 20 - performance.now()));
    };
    step();
  }

  stopSending(): void {
    clearTimeout(this.sendTimer);
    this.sendTimer = undefined;
  }

  /** RFC 4733 DTMF: three start/continue packets, then three end packets, as phones send. */
  sendDtmf(digit: string): void {
    const event = '0123456789*#ABCD'.indexOf(digit);
    const ts = (this.ts + 960) >>> 0;
    for (let k = 0; k < 6; k++) {
      const end = k >= 3;
      const duration = Math.min(k + 1, 4) * 160;
      const payload = Buffer.from([event, (end ? 0x80 : 0) | 10, duration >> 8, duration & 0xff]);
      this.sendEventPacket(payload, ts, k === 0);
    }
  }

  /** One telephone-event packet with any payload (hostile tests: short, unknown events). */
  sendEventPacket(payload: Buffer, timestamp = (this.ts + 960) >>> 0, marker = false): void {
    this.seq = (this.seq + 1) & 0xffff;
    const header = new RtpHeader({
      sequenceNumber: this.seq,
      timestamp,
      payloadType: TE_PT,
      marker,
      ssrc: this.transceiver!.sender.ssrc,
    });
    // The sender rewrites the payload type to its first codec; send on the transport directly.
    void this.transceiver!.sender.dtlsTransport.sendRtp(payload, header);
  }

  /** The telephone-event packets received, decoded (RFC 4733 §2.3). */
  receivedEvents(): ReceivedEvent[] {
    return this.arrivals
      .filter((a) => a.payloadType === TE_PT && a.payload.length >= 4)
      .map((a) => ({
        digit: '0123456789*#ABCD'[a.payload[0]!] ?? '?',
        end: (a.payload[1]! & 0x80) !== 0,
        duration: a.payload.readUInt16BE(2),
        timestamp: a.timestamp,
        marker: a.marker,
        seq: a.seq,
        ssrc: a.ssrc,
      }));
  }

  /** The digits received: one per event (its timestamp), in order. */
  receivedDigits(): string {
    let out = '';
    let last: number | undefined;
    for (const e of this.receivedEvents()) {
      if (e.timestamp === last) continue;
      last = e.timestamp;
      out += e.digit;
    }
    return out;
  }

  /** Opus packets received (telephone-event excluded), decoded to 48 kHz PCM in arrival order. */
  decodeReceived(from = 0, to = Infinity): Int16Array {
    const decoder = new OpusEncoder(48000, 1);
    const pkts = this.arrivals.filter((a) => a.payloadType === OPUS_PT && a.at >= from && a.at < to);
    const parts = pkts.map((a) => {
      const pcm = decoder.decode(a.payload);
      return new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
    });
    return concatPcm(parts);
  }

  /** Arrival times of the Opus frames received with audible content (decoded level above the threshold). */
  loudArrivals(thresholdDbfs = -35): number[] {
    const decoder = new OpusEncoder(48000, 1);
    return this.arrivals
      .filter((a) => a.payloadType === OPUS_PT)
      .filter((a) => {
        const pcm = decoder.decode(a.payload);
        const s = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
        let sum = 0;
        for (const v of s) sum += v * v;
        return 10 * Math.log10(sum / Math.max(1, s.length) / 32768 ** 2 + 1e-12) > thresholdDbfs;
      })
      .map((a) => a.at);
  }

  /** Largest gap between consecutive received packets after `from` (ms). */
  maxGapMs(from = 0): number {
    const times = this.arrivals.filter((a) => a.at >= from).map((a) => a.at);
    let max = 0;
    for (let i = 1; i < times.length; i++) max = Math.max(max, times[i]! - times[i - 1]!);
    return max;
  }

  /** The user hangs up: Meta sends the business a terminate webhook. */
  async hangup(durationSec = 1): Promise<number> {
    this.stopSending();
    const now = Math.floor(Date.now() / 1000);
    this.opts.graph.userEnded(this.waCallId);
    const body = callsEnvelope(this.phoneNumberId, this.business, [
      {
        id: this.waCallId,
        from: this.opts.number,
        to: this.business,
        event: 'terminate',
        direction: 'USER_INITIATED',
        timestamp: String(now),
        status: ['COMPLETED'],
        start_time: String(now - durationSec),
        end_time: String(now),
        duration: durationSec,
      },
    ]);
    const status = await this.postWebhook(body);
    await this.close();
    return status;
  }

  async close(): Promise<void> {
    this.stopSending();
    this.track.stop();
    await this.pc.close();
    this.relay?.close();
  }
}
