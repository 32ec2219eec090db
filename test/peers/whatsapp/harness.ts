import type { AiBackend, AiSession, AiSessionEvents, AiSessionOptions } from '../../../src/ai/session.js';
import { parseConfig } from '../../../src/config/load.js';
import { l16, type AudioFormat } from '../../../src/core/audio/format.js';
import { pcmBuffer, pcmView } from '../../../src/core/audio/level.js';
import { testLogger } from '../../../src/core/logger.js';
import type { PlayedMark } from '../../../src/core/playout.js';
import { TypedEmitter } from '../../../src/core/typed-emitter.js';
import { buildFronts } from '../../../src/fronts.js';
import { Gateway } from '../../../src/gateway.js';
import { WEBHOOK_PATH, WhatsAppFront } from '../../../src/webrtc/front.js';
import { GraphStub } from './graph-stub.js';
import { WhatsAppUser } from './user.js';

export const APP_SECRET = 'test-app-secret-0123456789';
export const VERIFY_TOKEN = 'verify-me-please';
export const API_TOKEN = 'wa-test-token-0123456789';
const AI_RATE = 24000;
/** How far ahead of real time the tone AI keeps the playout buffer. */
const LEAD_MS = 200;

/**
 * A test AI: plays a continuous tone (frequency chosen per call) and records every caller frame it
 * is given, so a test can check both directions of a real call.
 */
export class ToneSession extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly inputFormat: AudioFormat = l16(AI_RATE);
  readonly outputFormat: AudioFormat = l16(AI_RATE);
  readonly heard: Int16Array[] = [];
  private timer: NodeJS.Timeout | undefined;
  private emitted = 0;
  private table: Int16Array | undefined;
  private t0 = 0;
  closedWith: string | undefined;

  /** `gapEveryMs`: go quiet for half of every period (the bridge must then send encoded silence). */
  constructor(
    readonly freq: number,
    readonly gapEveryMs = 0,
  ) {
    super();
  }

  start(): Promise<void> {
    this.t0 = performance.now();
    this.emit('ready');
    this.pump();
    this.timer = setInterval(() => this.pump(), 50);
    return Promise.resolve();
  }

  /** Keep the emitted tone LEAD_MS ahead of the wall clock, phase-continuous. */
  private pump(): void {
    const due = Math.round(((performance.now() - this.t0 + LEAD_MS) * AI_RATE) / 1000);
    const n = due - this.emitted;
    if (n <= 0) return;
    // One second of an integer-Hz tone is a whole number of cycles: loop a precomputed second.
    this.table ??= Int16Array.from({ length: AI_RATE }, (_, i) =>
      Math.round(8000 * Math.sin((2 * Math.PI * this.freq * i) / AI_RATE)),
    );
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++) pcm[i] = this.table[(this.emitted + i) % AI_RATE]!;
    const quiet = this.gapEveryMs > 0 && ((this.emitted / AI_RATE) * 1000) % this.gapEveryMs >= this.gapEveryMs / 2;
    this.emitted += n;
    // While quiet the AI emits nothing at all, like a real AI between turns.
    if (!quiet) this.emit('audio', pcmBuffer(pcm), 'tone');
  }

  sendAudio(frame: Buffer): void {
    this.heard.push(Int16Array.from(pcmView(frame)));
  }

  playoutCleared(_mark: PlayedMark): void {}

  close(reason: string): Promise<void> {
    clearInterval(this.timer);
    this.closedWith ??= reason;
    this.emit('closed', reason);
    return Promise.resolve();
  }

  heardPcm(skipFrames = 0): Int16Array {
    const parts = this.heard.slice(skipFrames);
    const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

export interface Harness {
  gw: Gateway;
  graph: GraphStub;
  front: WhatsAppFront;
  webhookUrl: string;
  /** Tone sessions by gateway call id. */
  sessions: Map<string, ToneSession>;
  user(number: string): WhatsAppUser;
  stop(): Promise<void>;
}

/**
 * The real Gateway (parseConfig + buildFronts, as `npm start` does) with WhatsApp enabled and the
 * Graph API pointed at the stand-in; the `local` route kind is swapped for the tone AI, whose
 * frequency per call comes from `freqFor(caller number)`.
 */
export async function startHarness(
  opts: {
    freqFor?: (from: string) => number;
    gapEveryMs?: number;
    /** Keep the real local agent (espeak-ng greeting + echo) instead of the tone AI. */
    realAgent?: boolean;
    mediaTimeoutSec?: number;
    whatsapp?: Record<string, unknown>;
  } = {},
): Promise<Harness> {
  const graph = new GraphStub();
  await graph.start();
  const config = parseConfig(
    {
      http: { host: '127.0.0.1', port: 0 },
      api: { token: API_TOKEN },
      sip: { enabled: false },
      records: { path: ':memory:' },
      shutdown: { drainSec: 0 },
      routes: { local: { kind: 'local', greeting: 'Hello caller.' } },
      whatsapp: {
        enabled: true,
        phoneNumberId: graph.phoneNumberId,
        accessToken: graph.accessToken,
        appSecret: APP_SECRET,
        verifyToken: VERIFY_TOKEN,
        graphBaseUrl: graph.baseUrl,
        graphVersion: graph.version,
        publicIp: '127.0.0.1',
        udpPortMin: 41000,
        udpPortMax: 41999,
        mediaTimeoutSec: opts.mediaTimeoutSec ?? 8,
        ...opts.whatsapp,
      },
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  const sessions = new Map<string, ToneSession>();
  const freqFor = opts.freqFor ?? (() => 440);
  const backend: AiBackend = {
    kind: 'local',
    open(o: AiSessionOptions) {
      const from = gw.ctx.registry.get(o.callId)?.info.from ?? '';
      const s = new ToneSession(freqFor(from), opts.gapEveryMs);
      sessions.set(o.callId, s);
      return s;
    },
  };
  if (!opts.realAgent) gw.ctx.backends.register('local', () => backend);
  const fronts = buildFronts(gw.ctx);
  for (const f of fronts) gw.addFront(f);
  const front = fronts.find((f): f is WhatsAppFront => f instanceof WhatsAppFront);
  if (!front) throw new Error('buildFronts did not return a WhatsAppFront');
  await gw.start();
  const webhookUrl = `http://127.0.0.1:${gw.httpPort}${WEBHOOK_PATH}`;
  const users: WhatsAppUser[] = [];
  return {
    gw,
    graph,
    front,
    webhookUrl,
    sessions,
    user(number: string) {
      const u = new WhatsAppUser({ webhookUrl, appSecret: APP_SECRET, graph, number });
      users.push(u);
      return u;
    },
    async stop() {
      await Promise.all(users.map((u) => u.close().catch(() => {})));
      await gw.stop('test_done', 0);
      await graph.stop();
    },
  };
}
