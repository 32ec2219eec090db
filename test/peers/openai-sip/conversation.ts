import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { createCodec, type FrameCodec } from '../../../src/core/audio/codecs.js';
import { type AudioFormat, PCMA_8K, PCMU_8K } from '../../../src/core/audio/format.js';
import { EnergyVad } from '../../../src/core/audio/vad.js';
import { GatewayError } from '../../../src/core/errors.js';
import type { LegDialer, OutboundLegRequest } from '../../../src/core/leg-dialer.js';
import type { HangupReason, LegQuality, MediaLeg, MediaLegEvents } from '../../../src/core/media-leg.js';
import { TypedEmitter } from '../../../src/core/typed-emitter.js';
import { frames, tone } from '../../support/audio.js';
import type { OpenAiApiStandIn } from './api-standin.js';
import { incomingCallEvent, postSignedWebhook } from './webhook-signer.js';

export interface OpenAiSipConversationOptions {
  webhookUrl: () => string;
  secret: string;
  api: OpenAiApiStandIn;
  apiKey: string;
  /** The model's think time: turn detected (or response.create) → its first audio. Default 300 ms. */
  replyDelayMs?: number;
  /** server_vad silence_duration_ms (audio_end_ms includes it). Default 500. */
  silenceMs?: number;
  /** Tone of the greeting (a response.create) and of answers to caller turns. */
  greetingHz?: number;
  answerHz?: number;
  /** Length of each response's audio. Default 800 ms. */
  toneMs?: number;
}

/** Events as the sideband sent them, with performance.now() times. */
export interface SentEvent {
  type: string;
  at: number;
  event: Record<string, unknown>;
}

const id = (prefix: string) => `${prefix}_${randomBytes(8).toString('hex')}`;

interface ActiveResponse {
  id: string;
  /** Its audio has started streaming into the SIP call. */
  streaming: boolean;
  /** All of its audio has been generated (queued for the leg). */
  generated: boolean;
  timer?: NodeJS.Timeout;
}

/**
 * OpenAI's side of one SIP call: a single conversation whose audio rides the SIP leg and whose
 * events ride the sideband, as at OpenAI. It hears the caller on the leg and runs server VAD on it:
 * `input_audio_buffer.speech_started {audio_start_ms}` / `speech_stopped {audio_end_ms}` (ms on the
 * input timeline: the audio received on this call; audio_end_ms includes the trailing silence),
 * then commits and answers. A response (to a turn, or to a sideband `response.create` such as the
 * greeting) is `response.created`, after the think time its audio on the leg in real time with
 * `output_audio_buffer.started {response_id}` when it starts streaming, `response.done` once
 * generated and `output_audio_buffer.stopped` once played; the caller speaking over it clears it
 * (`output_audio_buffer.cleared`, response.done `cancelled`).
 */
export class ConversationCall {
  readonly sent: SentEvent[] = [];
  readonly received: { type: string; at: number }[] = [];
  /** Caller audio heard, ms (the input timeline). */
  heardMs = 0;
  ws: WebSocket | undefined;
  private readonly vad: EnergyVad;
  private readonly codec: FrameCodec;
  private speechItem: string | undefined;
  private readonly output: Buffer[] = [];
  private active: ActiveResponse | undefined;
  private seq = 0;
  closed = false;

  constructor(
    readonly openAiCallId: string,
    readonly format: AudioFormat,
    private readonly opts: Required<Omit<OpenAiSipConversationOptions, 'webhookUrl' | 'secret' | 'api' | 'apiKey'>>,
  ) {
    this.codec = createCodec(format);
    this.vad = new EnergyVad({ thresholdDbfs: -40, minSpeechMs: 60, silenceMs: opts.silenceMs });
  }

  session(): Record<string, unknown> {
    return {
      type: 'realtime',
      model: 'gpt-realtime',
      output_modalities: ['audio'],
      audio: {
        input: {
          format: { type: this.format.codec === 'pcma' ? 'audio/pcma' : 'audio/pcmu' },
          turn_detection: {
            type: 'server_vad',
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: this.opts.silenceMs,
            create_response: true,
            interrupt_response: true,
          },
        },
        output: { format: { type: this.format.codec === 'pcma' ? 'audio/pcma' : 'audio/pcmu' }, voice: 'marin' },
      },
    };
  }

  send(event: Record<string, unknown>): void {
    const full = { event_id: `event_${++this.seq}`, ...event };
    this.sent.push({ type: String(event.type), at: performance.now(), event: full });
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(full));
  }

  /** A sideband client event. */
  onClientEvent(ev: { type?: unknown }): void {
    this.received.push({ type: String(ev.type), at: performance.now() });
    if (ev.type === 'session.update') this.send({ type: 'session.updated', session: this.session() });
    else if (ev.type === 'response.create') this.respond(this.opts.greetingHz);
  }

  /** 20 ms of caller audio reached OpenAI over RTP. */
  hear(frame: Buffer): void {
    if (this.closed) return;
    this.heardMs += 20;
    const ev = this.vad.process(this.codec.decode(frame));
    if (ev === 'start') {
      this.speechItem = id('item');
      this.send({
        type: 'input_audio_buffer.speech_started',
        audio_start_ms: Math.max(0, this.heardMs - 60),
        item_id: this.speechItem,
      });
      this.interrupt();
    } else if (ev === 'stop') {
      const itemId = this.speechItem ?? id('item');
      this.speechItem = undefined;
      this.send({ type: 'input_audio_buffer.speech_stopped', audio_end_ms: this.heardMs, item_id: itemId });
      this.send({ type: 'input_audio_buffer.committed', item_id: itemId, previous_item_id: null });
      this.respond(this.opts.answerHz);
    }
  }

  /** 20 ms of OpenAI's audio for the SIP leg (silence between responses, like a real RTP stream). */
  nextFrame(): Buffer {
    const frame = this.output.shift();
    const a = this.active;
    if (frame && a && !a.streaming) {
      a.streaming = true;
      this.send({ type: 'output_audio_buffer.started', response_id: a.id });
    }
    if (!frame && a?.streaming && a.generated) {
      this.active = undefined;
      this.send({ type: 'output_audio_buffer.stopped', response_id: a.id });
    }
    return frame ?? this.codec.encode(new Int16Array(160));
  }

  private respond(hz: number): void {
    if (this.active || this.closed) return;
    const responseId = id('resp');
    const a: ActiveResponse = { id: responseId, streaming: false, generated: false };
    this.active = a;
    this.send({
      type: 'response.created',
      response: { id: responseId, object: 'realtime.response', status: 'in_progress' },
    });
    a.timer = setTimeout(() => {
      if (this.active !== a) return;
      this.output.push(...frames(tone(hz, 8000, this.opts.toneMs, 12000), 160).map((f) => this.codec.encode(f)));
      a.generated = true; // generation is faster than playout: done before it has been heard
      this.send({
        type: 'response.done',
        response: { id: responseId, object: 'realtime.response', status: 'completed' },
      });
    }, this.opts.replyDelayMs);
  }

  /** The caller spoke over a response: it is cut (OpenAI's interrupt_response). */
  private interrupt(): void {
    const a = this.active;
    if (!a) return;
    clearTimeout(a.timer);
    this.active = undefined;
    this.output.length = 0;
    if (a.streaming) this.send({ type: 'output_audio_buffer.cleared', response_id: a.id });
    if (!a.generated)
      this.send({ type: 'response.done', response: { id: a.id, object: 'realtime.response', status: 'cancelled' } });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.active?.timer);
    this.ws?.close(1000, 'call ended');
  }
}

/** The SIP leg to OpenAI as the gateway sees it (the transport itself is covered by sip-peer.ts). */
class ConversationLeg extends TypedEmitter<MediaLegEvents> implements MediaLeg {
  readonly id = randomUUID();
  closedWith: HangupReason | undefined;
  private sent = 0;
  private heard = 0;

  constructor(
    readonly callId: string,
    private readonly conv: ConversationCall,
  ) {
    super();
  }

  get format(): AudioFormat {
    return this.conv.format;
  }

  readFrame(): Buffer | null {
    if (this.closedWith) return null;
    this.sent++;
    return this.conv.nextFrame();
  }

  writeFrame(frame: Buffer): void {
    if (this.closedWith) return;
    this.heard++;
    this.conv.hear(frame);
  }

  async close(reason: HangupReason): Promise<void> {
    if (this.closedWith) return;
    this.closedWith = reason;
    this.conv.close();
    this.emit('closed');
  }

  quality(): LegQuality {
    return { packetsSent: this.heard, packetsReceived: this.sent };
  }
}

/**
 * OpenAI's SIP endpoint plus its Realtime sideband, with one conversation per call: used as the
 * gateway's legDialer (the webhook/accept flow as in fake-dialer.ts) and as the route's realtimeUrl.
 */
export class OpenAiSipConversation implements LegDialer {
  readonly calls: ConversationCall[] = [];
  /** Sideband upgrades refused (status), e.g. an unknown call_id or a wrong key. */
  readonly refused: number[] = [];
  private http: Server | undefined;
  private wss: WebSocketServer | undefined;
  private readonly conf: Required<Omit<OpenAiSipConversationOptions, 'webhookUrl' | 'secret' | 'api' | 'apiKey'>>;

  constructor(private readonly opts: OpenAiSipConversationOptions) {
    this.conf = {
      replyDelayMs: opts.replyDelayMs ?? 300,
      silenceMs: opts.silenceMs ?? 500,
      greetingHz: opts.greetingHz ?? 500,
      answerHz: opts.answerHz ?? 600,
      toneMs: opts.toneMs ?? 800,
    };
  }

  get url(): string {
    const addr = this.http?.address() as AddressInfo | null;
    if (!addr) throw new Error('OpenAiSipConversation not started');
    return `ws://127.0.0.1:${addr.port}/v1/realtime`;
  }

  async start(): Promise<void> {
    this.wss = new WebSocketServer({ noServer: true });
    this.http = createServer((_req, res) => res.writeHead(426).end());
    this.http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.upgrade(req, socket, head));
    await new Promise<void>((r) => this.http!.listen(0, '127.0.0.1', r));
  }

  async stop(): Promise<void> {
    for (const c of this.calls) c.close();
    for (const ws of this.wss?.clients ?? []) ws.terminate();
    await new Promise<void>((r) => (this.http ? this.http.close(() => r()) : r()));
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const call = this.calls.find((c) => c.openAiCallId === url.searchParams.get('call_id'));
    const status = req.headers.authorization !== `Bearer ${this.opts.apiKey}` ? 401 : !call ? 404 : 0;
    if (status || !call) {
      this.refused.push(status);
      socket.end(`HTTP/1.1 ${status} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      return;
    }
    this.wss!.handleUpgrade(req, socket, head, (ws) => {
      call.ws = ws;
      ws.on('message', (data) => {
        try {
          call.onClientEvent(JSON.parse(data.toString()) as { type?: unknown });
        } catch {
          call.send({ type: 'error', error: { type: 'invalid_request_error', message: 'bad JSON' } });
        }
      });
      ws.on('error', () => {});
      call.send({ type: 'session.created', session: call.session() });
    });
  }

  async dial(req: OutboundLegRequest): Promise<MediaLeg> {
    const openAiCallId = `rtc_${randomUUID().replace(/-/g, '')}`;
    const sipHeaders = [
      { name: 'From', value: `<sip:${req.from}@gateway.example>;tag=1` },
      { name: 'To', value: `<${req.uri}>` },
      ...Object.entries(req.headers).map(([name, value]) => ({ name, value })),
    ];
    const format = req.codecs[0] === 'PCMA' ? PCMA_8K : PCMU_8K;
    const conv = new ConversationCall(openAiCallId, format, this.conf);
    this.calls.push(conv);
    const status = await postSignedWebhook(
      this.opts.webhookUrl(),
      this.opts.secret,
      incomingCallEvent(openAiCallId, sipHeaders),
    );
    if (status !== 200) throw new GatewayError('upstream', `webhook refused with ${status}`, req.call.id);
    const decision = await this.opts.api.waitFor((r) => r.callId === openAiCallId, req.timeoutMs);
    if (decision.action !== 'accept')
      throw new GatewayError('upstream', `OpenAI call ${decision.action}ed`, req.call.id);
    return new ConversationLeg(req.call.id, conv);
  }
}
