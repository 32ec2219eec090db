import type { AiBackend, AiSessionOptions } from '../../../src/ai/session.js';
import { parseConfig } from '../../../src/config/load.js';
import { testLogger } from '../../../src/core/logger.js';
import { buildFronts } from '../../../src/fronts.js';
import { Gateway } from '../../../src/gateway.js';
import { WEBHOOK_PATH, WhatsAppFront } from '../../../src/webrtc/front.js';
import { leasePortRange, releasePortRange } from '../../support/ports.js';
import { ToneAi } from '../tone-ai.js';
import { GraphStub } from './graph-stub.js';
import { WhatsAppUser, type UserOptions } from './user.js';

export const APP_SECRET = 'test-app-secret-0123456789';
export const VERIFY_TOKEN = 'verify-me-please';
export const API_TOKEN = 'wa-test-token-0123456789';
/** The tone AI at 24 kHz L16 (what a WebRTC leg's route asks for). */
export { ToneAi as ToneSession };

export interface Harness {
  gw: Gateway;
  graph: GraphStub;
  front: WhatsAppFront;
  webhookUrl: string;
  /** Tone sessions by gateway call id. */
  sessions: Map<string, ToneAi>;
  /** A simulated user; `opts` adds a network (relay/srflx, loss) or DTX. */
  user(number: string, opts?: Pick<UserOptions, 'network' | 'dtx' | 'name'>): WhatsAppUser;
  stop(): Promise<void>;
}

/** What the gateway needs to know of a Graph API stand-in (a GraphStub, or one in another process). */
export type GraphInfo = Pick<GraphStub, 'phoneNumberId' | 'accessToken' | 'baseUrl' | 'version'>;

/** The `whatsapp` config section for a gateway on the Graph stand-in, with its WebRTC media on `ports`. */
export function whatsappConfig(
  graph: GraphInfo,
  ports: readonly [number, number],
  secrets: { appSecret: string; verifyToken: string } = { appSecret: APP_SECRET, verifyToken: VERIFY_TOKEN },
) {
  return {
    enabled: true,
    phoneNumberId: graph.phoneNumberId,
    accessToken: graph.accessToken,
    appSecret: secrets.appSecret,
    verifyToken: secrets.verifyToken,
    graphBaseUrl: graph.baseUrl,
    graphVersion: graph.version,
    publicIp: '127.0.0.1',
    udpPortMin: ports[0],
    udpPortMax: ports[1],
  };
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
    /** Extra routes next to `local` (the tone AI), and routing. */
    routes?: Record<string, unknown>;
    routing?: Record<string, unknown>;
    /** More business numbers (phone-number IDs) the Graph stand-in serves. */
    graphNumbers?: string[];
    /** Other top-level config keys (limits, http, ...). */
    config?: Record<string, unknown>;
  } = {},
): Promise<Harness> {
  const graph = new GraphStub(undefined, undefined, undefined, opts.graphNumbers);
  const ports = leasePortRange(100);
  await graph.start();
  const config = parseConfig(
    {
      http: { host: '127.0.0.1', port: 0 },
      api: { token: API_TOKEN },
      sip: { enabled: false },
      records: { path: ':memory:' },
      shutdown: { drainSec: 0 },
      routes: { local: { kind: 'local', greeting: 'Hello caller.' }, ...opts.routes },
      ...(opts.routing ? { routing: opts.routing } : {}),
      whatsapp: { ...whatsappConfig(graph, ports), mediaTimeoutSec: opts.mediaTimeoutSec ?? 8, ...opts.whatsapp },
      ...opts.config,
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  const sessions = new Map<string, ToneAi>();
  const freqFor = opts.freqFor ?? (() => 440);
  const backend: AiBackend = {
    kind: 'local',
    open(o: AiSessionOptions) {
      const from = gw.ctx.registry.get(o.callId)?.info.from ?? '';
      const s = new ToneAi(freqFor(from), { gapEveryMs: opts.gapEveryMs });
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
  graph.sendWebhooksTo(webhookUrl, APP_SECRET);
  const users: WhatsAppUser[] = [];
  return {
    gw,
    graph,
    front,
    webhookUrl,
    sessions,
    user(number, extra = {}) {
      const u = new WhatsAppUser({ webhookUrl, appSecret: APP_SECRET, graph, number, ...extra });
      users.push(u);
      return u;
    },
    async stop() {
      await Promise.all(users.map((u) => u.close().catch(() => {})));
      await gw.stop('test_done', 0);
      await graph.stop();
      releasePortRange(ports);
    },
  };
}
