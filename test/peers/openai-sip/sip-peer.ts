import { randomUUID } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { createCodec, type FrameCodec } from '../../../src/core/audio/codecs.js';
import { PCMA_8K, PCMU_8K } from '../../../src/core/audio/format.js';
import { concatPcm } from '../../../src/core/audio/level.js';
import { testLogger } from '../../../src/core/logger.js';
import { EmbeddedSipEngine } from '../../../src/sip/embedded.js';
import type { IncomingInvite, SipDialog } from '../../../src/sip/engine.js';
import { buildRtp, parseRtp } from '../../../src/sip/rtp.js';
import { answerDirection, buildAnswer, readOffer, type AudioOffer, type G711 } from '../../../src/sip/sdp.js';
import type { OpenAiApiStandIn, RecordedRequest } from './api-standin.js';
import { incomingCallEvent, postSignedWebhook } from './webhook-signer.js';

/**
 * One end of a G.711 RTP stream for test peers: sends a continuous tone on a drift-corrected
 * 20 ms clock (phase-continuous, so the far end can measure its frequency) and keeps every audio
 * payload it receives, in arrival order, for decoding. It answers to wherever the far end's RTP
 * comes from (symmetric RTP), like a real phone behind an SBC.
 */
export class RtpToneEndpoint {
  readonly received: Buffer[] = [];
  private sock: Socket | undefined;
  private remote: { address: string; port: number } | undefined;
  private codec: FrameCodec = createCodec(PCMU_8K);
  private payloadType = 0;
  private timer: NodeJS.Timeout | undefined;
  private seq = Math.floor(Math.random() * 0xffff);
  private ts = Math.floor(Math.random() * 0xffffffff);
  private readonly ssrc = Math.floor(Math.random() * 0xffffffff);
  sent = 0;

  constructor(
    readonly toneHz: number,
    /** Set to 0 mid-call to send silence (a carrier keeps sending RTP when the caller is quiet). */
    public amplitude = 8000,
  ) {}

  async start(host = '127.0.0.1'): Promise<number> {
    const s = createSocket('udp4');
    this.sock = s;
    s.on('message', (buf, rinfo) => {
      const p = parseRtp(buf);
      if (!p.ok || p.pkt.payloadType !== this.payloadType || p.pkt.payload.length !== 160) return;
      this.remote ??= { address: rinfo.address, port: rinfo.port };
      this.received.push(Buffer.from(p.pkt.payload));
    });
    await new Promise<void>((r) => s.bind(0, host, () => r()));
    return this.port;
  }

  get port(): number {
    return this.sock!.address().port;
  }

  /** The far end's media address and the law both sides agreed on. */
  setRemote(address: string, port: number, codec: G711, payloadType: number): void {
    this.remote = { address, port };
    this.codec = createCodec(codec === 'PCMA' ? PCMA_8K : PCMU_8K);
    this.payloadType = payloadType;
  }

  /** Opens the socket, aims it at an offer's media and returns the answer SDP (this port, the offer's law). */
  async answer(offer: AudioOffer, sessionId = 1): Promise<string> {
    const port = await this.start();
    this.setRemote(offer.address, offer.port, offer.codec, offer.payloadType);
    return buildAnswer({
      address: '127.0.0.1',
      port,
      sessionId,
      version: 1,
      codec: offer.codec,
      payloadType: offer.payloadType,
      dtmfPayloadType: offer.dtmfPayloadType,
      direction: answerDirection(offer.direction),
    });
  }

  startSending(): void {
    if (this.timer) return;
    const t0 = performance.now();
    let i = 0;
    const step = () => {
      while (performance.now() - t0 >= i * 20) {
        const pcm = new Int16Array(160);
        for (let k = 0; k < 160; k++)
          pcm[k] = Math.round(this.amplitude * Math.sin((2 * Math.PI * this.toneHz * (i * 160 + k)) / 8000));
        this.seq = (this.seq + 1) & 0xffff;
        this.ts = (this.ts + 160) >>> 0;
        const pkt = buildRtp(
          { payloadType: this.payloadType, marker: i === 0, seq: this.seq, timestamp: this.ts, ssrc: this.ssrc },
          this.codec.encode(pcm),
        );
        if (this.remote && this.sock) this.sock.send(pkt, this.remote.port, this.remote.address);
        this.sent++;
        i++;
      }
      this.timer = setTimeout(step, Math.max(1, t0 + i * 20 - performance.now()));
    };
    step();
  }

  stopSending(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Everything received so far (from frame `skip` on), decoded to 8 kHz PCM. */
  heard(skip = 0): Int16Array {
    const parts = this.received.slice(skip).map((f) => this.codec.decode(f));
    return concatPcm(parts);
  }

  close(): void {
    this.stopSending();
    this.sock?.close();
    this.sock = undefined;
  }
}

/** A call as OpenAI's SIP endpoint saw it. */
export interface OpenAiPeerCall {
  openAiCallId: string;
  invite: IncomingInvite;
  /** What went into the webhook's sip_headers (auth headers removed, order kept). */
  sipHeaders: { name: string; value: string }[];
  /** The gateway's decision as the API stand-in received it. */
  decision: RecordedRequest | undefined;
  /** 200 (accepted), 603 (rejected) or another status we refused with. */
  status: number | undefined;
  dialog: SipDialog | undefined;
  media: RtpToneEndpoint;
  codec: G711 | undefined;
  /** The gateway hung up (BYE). */
  byeReceived: boolean;
  /** Hang up from OpenAI's side (BYE). */
  hangup(): Promise<void>;
}

export interface OpenAiSipPeerOptions {
  webhookUrl: () => string;
  secret: string;
  api: OpenAiApiStandIn;
  toneHz?: number;
  /** How long to wait for the gateway's accept/reject after the webhook. */
  decisionTimeoutMs?: number;
}

/** Header names as they appear on the wire (our parser keeps them lower-case). */
function wireName(n: string): string {
  const special: Record<string, string> = { 'call-id': 'Call-ID', cseq: 'CSeq' };
  return special[n] ?? n.replace(/(^|-)([a-z])/g, (_, d: string, c: string) => d + c.toUpperCase());
}

/**
 * OpenAI's SIP endpoint on 127.0.0.1, faithful to the documented flow: it answers an INVITE with
 * 180, posts a signed `realtime.call.incoming` webhook (sip_headers = the INVITE's headers, auth
 * headers removed, order kept) to the gateway, and only answers 200 OK once the gateway's accept has
 * reached the API stand-in (validated there); a reject — or an accept the stand-in found wrong —
 * gets 603. Once up it streams a tone (440 Hz by default) over RTP in the agreed G.711 law and
 * records what it hears. The SIP side is the gateway's own embedded engine used as a library.
 */
export class OpenAiSipPeer {
  readonly engine: EmbeddedSipEngine;
  readonly calls: OpenAiPeerCall[] = [];
  private readonly waiters: ((c: OpenAiPeerCall) => void)[] = [];

  constructor(private readonly opts: OpenAiSipPeerOptions) {
    this.engine = new EmbeddedSipEngine({
      host: '127.0.0.1',
      port: 0,
      publicAddress: '127.0.0.1',
      log: testLogger(),
      userAgent: 'openai-sip-peer',
    });
    this.engine.on('invite', (inv) => {
      this.onInvite(inv).catch(() => inv.reject(500));
    });
  }

  async start(): Promise<number> {
    await this.engine.start();
    return this.engine.port;
  }

  /** The route's sipUri for this peer (UDP keeps the test peer simple; TLS dialing is covered in test/sip/tls.test.ts). */
  uri(projectId = 'proj_test'): string {
    return `sip:${projectId}@127.0.0.1:${this.engine.port};transport=udp`;
  }

  /** The next call that reaches 200 OK or a refusal (or one that already has, beyond `seen`). */
  nextCall(seen: number, timeoutMs = 10_000): Promise<OpenAiPeerCall> {
    const done = this.calls.slice(seen).find((c) => c.status !== undefined);
    if (done) return Promise.resolve(done);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('OpenAI SIP peer: no call settled in time')), timeoutMs);
      this.waiters.push((c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
  }

  private settled(c: OpenAiPeerCall): void {
    for (const w of this.waiters.splice(0)) w(c);
  }

  private async onInvite(inv: IncomingInvite): Promise<void> {
    const openAiCallId = `rtc_${randomUUID().replace(/-/g, '')}`;
    const sipHeaders = (inv.headerList?.() ?? [])
      .filter((h) => !['authorization', 'proxy-authorization'].includes(h.name))
      .map((h) => ({ name: wireName(h.name), value: h.value }));
    const media = new RtpToneEndpoint(this.opts.toneHz ?? 440);
    const call: OpenAiPeerCall = {
      openAiCallId,
      invite: inv,
      sipHeaders,
      decision: undefined,
      status: undefined,
      dialog: undefined,
      media,
      codec: undefined,
      byeReceived: false,
      hangup: async () => {
        media.stopSending();
        await call.dialog?.bye('openai_hangup');
        media.close();
      },
    };
    this.calls.push(call);
    const refuse = (status: number) => {
      call.status = status;
      inv.reject(status);
      this.settled(call);
    };
    const offered = readOffer(inv.sdp ?? '', ['PCMU', 'PCMA'], true);
    if (!offered.ok) return refuse(offered.status);
    inv.progress(180);
    const status = await postSignedWebhook(
      this.opts.webhookUrl(),
      this.opts.secret,
      incomingCallEvent(openAiCallId, sipHeaders),
    );
    if (status !== 200) return refuse(480);
    try {
      call.decision = await this.opts.api.waitFor(
        (r) => r.callId === openAiCallId && (r.action === 'accept' || r.action === 'reject'),
        this.opts.decisionTimeoutMs ?? 10_000,
      );
    } catch {
      return refuse(408);
    }
    if (call.decision.action !== 'accept' || call.decision.problems.length) return refuse(603);
    if (inv.cancelled) return;
    call.codec = offered.offer.codec;
    const sdp = await media.answer(offered.offer, Math.floor(Math.random() * 1e9));
    try {
      call.dialog = await inv.answer(sdp);
    } catch {
      media.close();
      call.status = 0;
      this.settled(call);
      return;
    }
    call.status = 200;
    call.dialog.on('bye', () => {
      call.byeReceived = true;
      media.close();
    });
    media.startSending();
    this.settled(call);
  }

  async stop(): Promise<void> {
    for (const c of this.calls) c.media.close();
    await this.engine.stop();
  }
}
