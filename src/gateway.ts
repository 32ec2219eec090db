import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { BackendRegistry } from './ai/backends.js';
import { installOpenAiSip } from './ai/openai-sip/install.js';
import { callView } from './api/call-view.js';
import { publishCallEvents, relayDropCounter } from './api/cluster-events.js';
import { hardenedServer, limitBody } from './api/http-server.js';
import { GatewayMetrics } from './api/metrics.js';
import type { RecordStore } from './api/record-store.js';
import { CallRecordStore } from './api/records.js';
import { PostgresRecordStore } from './api/records-postgres.js';
import { mountOps } from './api/routes.js';
import type { SseHub } from './api/sse.js';
import type { GatewayConfig } from './config/schema.js';
import { hostname } from 'node:os';
import { HttpPeerLink, requirePeer } from './cluster/peers.js';
import { RedisEventRelay } from './cluster/redis-events.js';
import { RedisClusterState } from './cluster/redis-state.js';
import type { Call, Front as FrontName } from './core/call.js';
import {
  InProcessClusterState,
  noPeers,
  noRelay,
  type ClusterState,
  type EventRelay,
  type PeerLink,
} from './core/cluster-state.js';
import { CallConnector } from './core/connector.js';
import { FrameClock } from './core/frame-clock.js';
import { enforceMaxDuration } from './core/max-duration.js';
import type { LegDialer, PartyDialer } from './core/leg-dialer.js';
import type { Logger } from './core/logger.js';
import { CallRecorder } from './core/recorder.js';
import { CallRegistry } from './core/registry.js';
import { Router } from './core/router.js';
import { isLoopback, LocalAccess } from './api/local-access.js';
import { SystemSampler } from './api/system-series.js';

/** How long a call record waits for the end's signalling (our BYE's 200) before it is written anyway. */
const RECORD_SETTLE_MS = 2000;

/** A front (SIP, WhatsApp, ...) as the gateway starts and stops it. */
export interface Front {
  readonly name: string;
  start(): Promise<void>;
  /** Stop taking new calls (SIP answers 503, WhatsApp rejects); existing calls continue. */
  drain?(): void;
  stop(): Promise<void>;
  /** Where it listens, for the start-up log. */
  describe(): Record<string, unknown>;
  /** False until its listeners are bound (for /readyz). */
  ready?(): boolean;
}

/** An outbound call request from the REST API, placed by the front that owns `front`. */
export interface OutboundRequest {
  front: FrontName;
  to: string;
  from?: string;
  trunk?: string;
  route?: string;
}
export type Dialer = (req: OutboundRequest) => Promise<Call>;

/** Media-only mode: an external WhatsApp webhook handler asks us for an SDP answer and the bridge. */
export interface MediaSessionRequest {
  callId: string;
  sdpOffer: string;
  fromNumber: string;
  toNumber: string;
  route?: string;
}
export interface MediaSessionProvider {
  start(req: MediaSessionRequest): Promise<{ sdpAnswer: string; call: Call }>;
  stop(callId: string): Promise<boolean>;
}

/** A carrier trunk as ops see it (GET /v1/trunks, /readyz details, dashboard). */
export interface TrunkView {
  name: string;
  kind: 'ip' | 'registration';
  match: 'ip' | 'registration' | 'both';
  allow: string[];
  activeCalls: number;
  maxCalls: number;
  /** Registration trunks: registered / failing (last status, next attempt) / stopped. */
  registration?: {
    state: string;
    aor: string;
    registrar: string;
    lastStatus?: number;
    lastReason?: string;
    nextAttemptAt?: string;
    expiresAt?: string;
    failures: number;
  };
}

export interface GatewayContext {
  config: GatewayConfig;
  log: Logger;
  registry: CallRegistry;
  router: Router;
  clock: FrameClock;
  backends: BackendRegistry;
  connector: CallConnector;
  metrics: GatewayMetrics;
  /** This instance's SQLite record file. */
  records: CallRecordStore;
  /** Where ended calls are written and the history is read: `records` itself, or PostgreSQL shared by all instances. */
  history: RecordStore;
  app: express.Express;
  /** Outbound call placers, by front name (registered by the fronts that can dial). */
  dialers: Map<string, Dialer>;
  /** Set by the WhatsApp front: media-only sessions for an external webhook handler. */
  mediaSessions: MediaSessionProvider | undefined;
  /** Set by the SIP front: places outbound SIP legs (OpenAI SIP route, SIP dial-out). */
  legDialer: LegDialer | undefined;
  /** Second legs of bridged transfers, by front name (SIP: numbers and URIs; WhatsApp: whatsapp:+number). */
  partyDialers: Map<string, PartyDialer>;
  /** Set by the SIP front: its trunks and their registration state. */
  trunks: (() => TrunkView[]) | undefined;
  /** True while draining for shutdown: fronts refuse new calls. */
  draining: boolean;
  /** Call ownership, cluster-wide caps, once-keys: in-process, or shared in Redis (issue 14). */
  cluster: ClusterState;
  /** Requests to the instance that owns a call (webhook events, API calls); none in one process. */
  peers: PeerLink;
  /** The other instances' call events for GET /v1/events (Redis pub/sub); none in one process. */
  events: EventRelay;
  /** Instance-to-instance endpoints (/internal/cluster on the ops listener, behind cluster.secret). */
  internal: express.Router;
  /** WebSocket upgrades on the ops listener, by path (the SIP front's `/sip`, RFC 7118). */
  upgrades: Map<string, UpgradeHandler>;
  /** Set when no api.token is configured: a token made up for this run, loopback peers only. */
  localAccess: LocalAccess | undefined;
  /** The console's system page history (calls, late frames, CPU, memory), sampled in-process. */
  system: SystemSampler;
}

/** In-process unless `cluster.redis.url` is set. */
function clusterState(config: GatewayConfig, log: Logger): ClusterState {
  const c = config.cluster;
  const instanceId = c.instanceId ?? `${hostname()}-${process.pid}`;
  if (!c.redis.url) return new InProcessClusterState(instanceId, c.advertiseUrl);
  return new RedisClusterState({
    url: c.redis.url,
    instanceId,
    advertiseUrl: c.advertiseUrl,
    keyPrefix: c.redis.keyPrefix,
    heartbeatMs: c.heartbeatSec * 1000,
    ttlMs: c.ttlSec * 1000,
    commandTimeoutMs: c.redis.commandTimeoutMs,
    log: log.child({ component: 'cluster' }),
  });
}

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/** Wires config → registry, router, AI backends, media clock, HTTP app, ops API and fronts. */
export class Gateway {
  readonly ctx: GatewayContext;
  private readonly fronts: Front[] = [];
  private server: Server | undefined;
  /** The separate ops listener (`ops.port`), when configured. */
  private opsServer: Server | undefined;
  private readonly opsApp: express.Express;
  private readonly sse: SseHub;
  /** Recordings still being finished (WAV header patch) after their call ended. */
  private readonly recordings = new Set<Promise<void>>();
  private stopping: Promise<void> | undefined;

  constructor(configured: GatewayConfig, log: Logger) {
    // No API_TOKEN: `npm start` must still let a newcomer open the console and press Call, and
    // must not open the API to anyone else. See LocalAccess.
    const localAccess = configured.api.token ? undefined : new LocalAccess();
    const config = localAccess ? { ...configured, api: { ...configured.api, token: localAccess.token } } : configured;
    const registry = new CallRegistry(log, config.limits);
    // Every SSE stream listens for created/ended calls (at most api.sseMaxClients of them) beside the
    // gateway's own few listeners: no leak warning in the operator's log with a dozen dashboards open.
    registry.setMaxListeners(config.api.sseMaxClients + 16);
    const router = new Router(config);
    const clock = new FrameClock();
    const backends = new BackendRegistry();
    const metrics = new GatewayMetrics(registry, clock.stats);
    const connector = new CallConnector({
      router,
      clock,
      backendFor: (r) => backends.backendFor(r),
      hooks: {
        onUplinkLatency: (ms) => metrics.uplinkLatency.observeMs(ms),
        onBargeIn: (ms) => metrics.bargeIn.observeMs(ms),
        onAiError: (route) => metrics.aiErrors.inc({ route }),
        onResponseFailed: (route, reason) => metrics.responseFailures.inc({ route, reason }),
        onLatency: (sample) => metrics.observeLatency(sample),
      },
      // Bridged transfers: the first front that dials this kind of destination places the leg.
      partyDialerFor: (destination) => [...this.ctx.partyDialers.values()].find((d) => d.handles(destination)),
    });
    const records = new CallRecordStore(config.records.path, {
      log,
      onLost: (n) => metrics.recordsLost.inc(n),
    });
    const app = express();
    app.disable('x-powered-by');
    // Webhook bodies are bounded before any router (or signature check) reads them.
    app.use('/webhooks', limitBody(config.http.maxWebhookBytes));
    this.opsApp = config.ops.port !== undefined ? express() : app;
    this.opsApp.disable('x-powered-by');
    this.ctx = {
      config,
      log,
      registry,
      router,
      clock,
      backends,
      connector,
      metrics,
      records,
      history: records,
      app,
      dialers: new Map(),
      mediaSessions: undefined,
      legDialer: undefined,
      partyDialers: new Map(),
      trunks: undefined,
      draining: false,
      cluster: clusterState(config, log),
      peers: noPeers,
      events: noRelay,
      internal: express.Router(),
      upgrades: new Map(),
      localAccess,
      system: new SystemSampler(registry, clock.stats, config.api.systemSampleMs, config.api.systemSamples),
    };
    if (config.records.postgres.url)
      this.ctx.history = new PostgresRecordStore({
        url: config.records.postgres.url,
        instanceId: this.ctx.cluster.instanceId,
        log: log.child({ component: 'records' }),
        onLost: (n) => metrics.recordsLost.inc(n),
      });
    if (this.ctx.cluster.shared) this.ctx.peers = new HttpPeerLink(this.ctx.cluster, config.cluster.secret);
    if (config.cluster.redis.url) {
      this.ctx.events = new RedisEventRelay({
        url: config.cluster.redis.url,
        instanceId: this.ctx.cluster.instanceId,
        keyPrefix: config.cluster.redis.keyPrefix,
        commandTimeoutMs: config.cluster.redis.commandTimeoutMs,
        log: log.child({ component: 'cluster-events' }),
        onDropped: relayDropCounter(metrics.registry),
      });
      publishCallEvents(registry, this.ctx.events);
    }
    this.opsApp.use(
      '/internal/cluster',
      requirePeer(config.cluster.secret),
      express.json({ limit: '1mb' }),
      this.ctx.internal,
    );
    // Webhook de-duplication is cluster-wide: OpenAI may deliver one event to several instances.
    installOpenAiSip(this.ctx, this.ctx.cluster);
    registry.on('created', (call) => this.recordCall(call));
    this.trackOwnership(registry);
    registry.on('created', (call) =>
      enforceMaxDuration(call, config.limits.maxCallDurationSec * 1000, config.limits.goodbye),
    );
    this.sse = mountOps(this.ctx, { publicApp: app, opsApp: this.opsApp }, () => this.ready());
  }

  /** Persist every call's record when it ends, and its audio when recording is on. */
  private recordCall(call: Call): void {
    const { config, history } = this.ctx;
    if (config.records.recordAudio) {
      call.on('state', (s) => {
        const source = call.tapSource;
        if (s !== 'bridged' || !source) return;
        // One WAV at the rate the call started with, across transfers (the recorder follows the call).
        const rate = source.tapRates.other;
        const rec = new CallRecorder(config.records.recordingsDir, call.id, call, rate, call.log, () =>
          this.ctx.metrics.recordingFailures.inc(),
        );
        // The call's teardown never waits for the disk; shutdown does (bounded), so WAVs get their sizes.
        call.onEnd(() => {
          const closing = rec.close().finally(() => this.recordings.delete(closing));
          this.recordings.add(closing);
        });
        call.log.info({ path: rec.path }, 'recording call audio');
      });
    }
    const write = () => {
      try {
        history.append(callView(call));
      } catch (err) {
        call.log.error({ err: (err as Error).message }, 'could not store call record');
      }
    };
    call.once('ended', () => {
      if (!call.settling) return write();
      // The record waits (briefly) for the end's signalling, e.g. the 200 to our BYE for its ladder.
      const writing = call
        .settled(RECORD_SETTLE_MS)
        .then(write)
        .finally(() => this.recordings.delete(writing));
      this.recordings.add(writing);
    });
  }

  /**
   * Every call is owned by this instance in cluster state while it lives (fronts have already taken
   * its slots at admission; this covers calls without caps), and released when it ends, whatever ended it.
   */
  private trackOwnership(registry: CallRegistry): void {
    const { cluster, log } = this.ctx;
    const failed = (what: string, call: Call) => (err: Error) =>
      log.warn({ callId: call.id, err: err.message }, `cluster state: ${what} failed`);
    registry.on('created', (call) => {
      cluster.admit(call.id, []).catch(failed('ownership', call));
      if (call.info.externalId && call.info.front === 'sip')
        cluster.alias('sip', call.info.externalId, call.id).catch(failed('alias', call));
    });
    registry.on('ended', (call) => void cluster.release(call.id).catch(failed('release', call)));
  }

  /** Wait (at most 5 s: a dead disk must not hold shutdown) for recordings to be finalised. */
  private async finishRecordings(): Promise<void> {
    if (!this.recordings.size) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.recordings]), new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
  }

  addFront(front: Front): void {
    this.fronts.push(front);
  }

  /** The public listener's port (webhooks; also the ops surface unless `ops.port` is set). */
  get httpPort(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  /** The ops surface's port: the separate ops listener, else the public one. */
  get opsPort(): number {
    return this.opsServer ? ((this.opsServer.address() as AddressInfo | null)?.port ?? 0) : this.httpPort;
  }

  /**
   * The console's address as the start-up log prints it. Without API_TOKEN it is a one-time login
   * link (the code in the fragment, which browsers never send to a server).
   */
  get consoleUrl(): string {
    const { config } = this.ctx;
    const host = config.ops.port !== undefined ? config.ops.host : config.http.host;
    const shown = host === '0.0.0.0' || host === '::' || host === '127.0.0.1' ? 'localhost' : host;
    const url = `http://${shown.includes(':') ? `[${shown}]` : shown}:${this.opsPort}/`;
    const code = this.ctx.localAccess?.loginCode;
    return code ? `${url}#login=${code}` : url;
  }

  ready(): { ok: boolean; checks: Record<string, boolean> } {
    const checks: Record<string, boolean> = { http: !!this.server?.listening, config: true };
    for (const f of this.fronts) checks[f.name] = f.ready ? f.ready() : true;
    return { ok: Object.values(checks).every(Boolean), checks };
  }

  async start(): Promise<void> {
    const { config, log, app } = this.ctx;
    await this.ctx.cluster.start();
    await this.ctx.events.start();
    if (this.ctx.history instanceof PostgresRecordStore) {
      // A database that is down at start delays nothing: records queue and the schema is applied on the first write.
      await this.ctx.history
        .migrate()
        .catch((err: Error) => log.warn({ err: err.message }, 'PostgreSQL not reachable at start: records will queue'));
    }
    this.ctx.system.start();
    this.server = await listen(hardenedServer(app, config.http), config.http.port, config.http.host);
    if (config.ops.port !== undefined)
      this.opsServer = await listen(hardenedServer(this.opsApp, config.http), config.ops.port, config.ops.host);
    (this.opsServer ?? this.server).on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.ctx.localAccess && !isLoopback(req.socket.remoteAddress))
        return void socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      const path = (req.url ?? '').split('?')[0] ?? '';
      const handler = this.ctx.upgrades.get(path);
      if (handler) return handler(req, socket, head);
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
    log.info(
      {
        http: `${config.http.host}:${this.httpPort}`,
        ops: this.opsServer ? `${config.ops.host}:${this.opsPort}` : 'shared with http',
        api: this.ctx.localAccess ? 'loopback only (no API_TOKEN)' : 'token',
      },
      'HTTP listening',
    );
    for (const f of this.fronts) {
      await f.start();
      log.info({ front: f.name, ...f.describe() }, 'front listening');
    }
    const routes = Object.entries(config.routes).map(([n, r]) => `${n}(${r.kind})`);
    log.info({ routes, default: config.routing.default }, 'gateway ready');
    const url = this.consoleUrl;
    if (config.browser.enabled && config.sip.enabled && config.sip.engine === 'embedded')
      log.info({ url: url.split('#')[0] }, `open ${url} and press Call`);
    else if (this.ctx.localAccess) log.info({ url: url.split('#')[0] }, `console: open ${url}`);
  }

  /**
   * Graceful stop: refuse new calls, let active calls finish for up to `drainMs`, then end the
   * rest cleanly (records are written as each call ends), then close fronts and listeners.
   */
  stop(reason = 'shutdown', drainMs = this.ctx.config.shutdown.drainSec * 1000): Promise<void> {
    this.stopping ??= this.shutdown(reason, drainMs);
    return this.stopping;
  }

  private async shutdown(reason: string, drainMs: number): Promise<void> {
    const { registry, log } = this.ctx;
    this.ctx.draining = true;
    for (const f of this.fronts) f.drain?.();
    await this.ctx.cluster
      .setDraining(true)
      .catch((err: Error) => log.warn({ err: err.message }, 'cluster state: drain flag not published'));
    if (registry.size > 0 && drainMs > 0) {
      log.info({ active: registry.size, drainMs }, 'draining active calls');
      const deadline = Date.now() + drainMs;
      while (registry.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    }
    await Promise.all(registry.list().map((c) => c.end({ by: 'gateway', cause: reason })));
    for (const f of [...this.fronts].reverse()) await f.stop();
    // Event streams never end by themselves: close them, or server.close() would wait forever.
    this.sse.closeAll();
    this.ctx.system.stop();
    await Promise.all([close(this.server), close(this.opsServer), this.finishRecordings()]);
    this.ctx.records.close();
    if (this.ctx.history !== this.ctx.records) await this.ctx.history.close();
    await this.ctx.events.stop();
    await this.ctx.cluster.stop();
    log.info('gateway stopped');
  }
}

function listen(server: Server, port: number, host: string): Promise<Server> {
  return new Promise<Server>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

/** Stop accepting, let in-flight requests finish briefly, then cut what is left (keep-alive, stuck clients). */
async function close(server: Server | undefined): Promise<void> {
  if (!server) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const grace = setTimeout(() => server.closeAllConnections(), 1000);
  await closed;
  clearTimeout(grace);
}
