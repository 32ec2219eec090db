import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import express from 'express';
import { BackendRegistry } from './ai/backends.js';
import type { GatewayConfig } from './config/schema.js';
import { CallConnector } from './core/connector.js';
import { FrameClock } from './core/frame-clock.js';
import type { Logger } from './core/logger.js';
import { CallRegistry } from './core/registry.js';
import { Router } from './core/router.js';

/** A front (SIP, WhatsApp, ...) as the gateway starts and stops it. */
export interface Front {
  readonly name: string;
  start(): Promise<void>;
  /** Stop taking new calls (existing calls continue). */
  drain?(): void;
  stop(): Promise<void>;
  /** Where it listens, for the start-up log. */
  describe(): Record<string, unknown>;
}

export interface GatewayContext {
  config: GatewayConfig;
  log: Logger;
  registry: CallRegistry;
  router: Router;
  clock: FrameClock;
  backends: BackendRegistry;
  connector: CallConnector;
  app: express.Express;
}

/** Wires config → registry, router, AI backends, media clock, HTTP app and fronts. */
export class Gateway {
  readonly ctx: GatewayContext;
  private readonly fronts: Front[] = [];
  private server: Server | undefined;

  constructor(config: GatewayConfig, log: Logger) {
    const registry = new CallRegistry(log);
    const router = new Router(config);
    const clock = new FrameClock();
    const backends = new BackendRegistry();
    const connector = new CallConnector({ router, clock, backendFor: (r) => backends.backendFor(r) });
    const app = express();
    app.disable('x-powered-by');
    app.get('/healthz', (_req, res) => {
      res.json({ status: 'ok', calls: registry.size });
    });
    this.ctx = { config, log, registry, router, clock, backends, connector, app };
  }

  addFront(front: Front): void {
    this.fronts.push(front);
  }

  get httpPort(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  async start(): Promise<void> {
    const { config, log, app } = this.ctx;
    this.server = createServer(app);
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(config.http.port, config.http.host, () => resolve());
    });
    log.info({ http: `${config.http.host}:${this.httpPort}` }, 'HTTP listening');
    for (const f of this.fronts) {
      await f.start();
      log.info({ front: f.name, ...f.describe() }, 'front listening');
    }
    const routes = Object.entries(config.routes).map(([n, r]) => `${n}(${r.kind})`);
    log.info({ routes, default: config.routing.default }, 'gateway ready');
  }

  async stop(reason = 'shutdown'): Promise<void> {
    for (const f of this.fronts) f.drain?.();
    await Promise.all(this.ctx.registry.list().map((c) => c.end({ by: 'gateway', cause: reason })));
    for (const f of [...this.fronts].reverse()) await f.stop();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server?.closeAllConnections();
  }
}
