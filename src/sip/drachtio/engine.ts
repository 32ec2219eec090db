import Srf from 'drachtio-srf';
import type { Logger } from '../../core/logger.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { SipEngine, SipEngineEvents } from '../engine.js';
import type { InviteOptions } from '../uac.js';
import { DrachtioDialog, type DialogHost } from './dialog.js';
import type { SrfLike } from './srf-types.js';
import { MergedInviteGuard } from './merged.js';
import { placeInvite, type PlacedInvite } from './uac.js';
import { DrachtioInvite } from './uas.js';

export type { DialogLike, SrfLike, SrfRequestLike, SrfResponseLike } from './srf-types.js';
export { DrachtioDialog } from './dialog.js';
export { DrachtioInvite } from './uas.js';

const ALLOW = 'INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY';
/** drachtio-srf's reconnect backoff starts at 150 ms and grows ×1.7; never wait longer than this. */
const RECONNECT_MAX_DELAY_MS = 5000;

export interface DrachtioEngineOptions {
  host: string;
  port: number;
  secret: string;
  /** How long calls in progress outlive a lost control connection before they are ended. */
  linkGraceSec?: number;
  log: Logger;
  /** Tests pass a fake; production uses drachtio-srf. */
  srf?: SrfLike;
}

/** drachtio-srf with an in-dialog request that uses the current control connection. */
function realSrf(): SrfLike {
  const srf = new Srf() as unknown as SrfLike & {
    app: { request(opts: object, cb: (err: Error | null, req?: RequestWithResponse) => void): void };
  };
  srf.requestInDialog = (stackDialogId, method, headers) =>
    new Promise<number>((resolve, reject) => {
      srf.app.request({ method, stackDialogId, headers }, (err, req) => {
        if (err || !req) return reject(err ?? new Error(`${method} not sent`));
        req.on('response', (res) => resolve(res.status));
      });
    });
  return srf;
}
interface RequestWithResponse {
  on(event: 'response', fn: (res: { status: number }) => void): void;
}

/**
 * The drachtio engine: a drachtio-server owns the SIP sockets and transactions (retransmissions,
 * ACK timeouts, CANCEL → 487, TCP/TLS, RFC 4028 refreshes) and we drive it through drachtio-srf
 * over its control connection. Everything above SIP (trunks, media, AI) is the same front as the
 * embedded engine.
 *
 * The control connection can drop (drachtio-server restarted, network): we are not ready while it
 * is down, drachtio-srf reconnects with backoff, and calls in progress keep their media (RTP is
 * ours). If it stays down past the grace period they end (BYE sent once it is back); when it comes
 * back, calls whose dialog drachtio-server no longer knows (it restarted) end at once.
 */
export class DrachtioEngine extends TypedEmitter<SipEngineEvents> implements SipEngine, DialogHost {
  readonly name = 'drachtio' as const;
  /** drachtio-server runs RFC 4028 itself (sessionTimers: 'engine'): the front never refreshes. */
  readonly canRefresh = false;
  readonly srf: SrfLike;
  private readonly log: Logger;
  private connected = false;
  private stopped = false;
  /** Set by drain(): OPTIONS get 503 so a dispatcher in front stops sending new calls. */
  private draining = false;
  private hostPort = '';
  private readonly dialogs = new Set<DrachtioDialog>();
  private readonly merged = new MergedInviteGuard();
  private readonly pendingByes = new Map<string, Record<string, string>>();
  private graceTimer: NodeJS.Timeout | undefined;
  private downSince: number | undefined;
  /** The RFC 4028 timer runs in drachtio-server: the front neither refreshes nor expires sessions. */
  readonly sessionTimers = 'engine' as const;

  constructor(private readonly opts: DrachtioEngineOptions) {
    super();
    this.log = opts.log.child({ component: 'sip-drachtio' });
    this.srf = opts.srf ?? realSrf();
  }

  start(): Promise<void> {
    const { srf } = this;
    srf.on('connect', (err, hostPort) => {
      if (err) return this.log.error({ err: err.message }, 'drachtio-server refused the connection (check the secret)');
      this.onLinkUp(hostPort);
    });
    srf.on('error', (err) => {
      this.log.error({ err: err.message, server: this.server }, 'drachtio connection error');
      this.onLinkDown();
    });
    srf.on('close', () => {
      if (this.connected) this.log.warn({ server: this.server }, 'connection to drachtio-server closed');
      this.onLinkDown();
    });
    srf.on('reconnecting', (info) =>
      this.log.info(
        { server: this.server, attempt: info.attempt, delayMs: info.delay },
        'reconnecting to drachtio-server',
      ),
    );
    srf.invite((req, res) => {
      if (this.merged.isMerged(req, res)) {
        this.log.warn({ sipCallId: req.get('Call-ID'), source: req.source_address }, 'merged INVITE answered 482');
        return res.send(482, 'Loop Detected (merged request)');
      }
      try {
        this.emit('invite', new DrachtioInvite(this, req, res, this.log));
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'INVITE handling failed');
        res.send(500);
      }
    });
    srf.options((_req, res) =>
      this.draining
        ? res.send(503, 'Service Unavailable (draining)', { headers: { 'Retry-After': '60' } })
        : res.send(200, { headers: { Allow: ALLOW, Accept: 'application/sdp' } }),
    );
    srf.connect({
      host: this.opts.host,
      port: this.opts.port,
      secret: this.opts.secret,
      reconnect: { retryMaxDelay: RECONNECT_MAX_DELAY_MS },
    });
    return Promise.resolve();
  }

  private get server(): string {
    return `${this.opts.host}:${this.opts.port}`;
  }

  private onLinkUp(hostPort: string): void {
    const wasDown = this.downSince !== undefined;
    this.connected = true;
    this.hostPort = hostPort;
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    this.log.info(
      { hostPort, server: this.server, downMs: wasDown ? Date.now() - this.downSince! : undefined },
      wasDown ? 'reconnected to drachtio-server' : 'connected to drachtio-server',
    );
    this.downSince = undefined;
    if (wasDown) void this.afterReconnect();
  }

  private onLinkDown(): void {
    this.connected = false;
    if (this.stopped || this.downSince !== undefined) return;
    this.downSince = Date.now();
    const graceMs = (this.opts.linkGraceSec ?? 30) * 1000;
    if (this.dialogs.size > 0)
      this.log.warn({ calls: this.dialogs.size, graceMs }, 'calls keep their media while drachtio-server is away');
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined;
      if (this.connected || this.dialogs.size === 0) return;
      this.log.error({ calls: this.dialogs.size, graceMs }, 'drachtio-server still unreachable: ending calls');
      for (const d of [...this.dialogs]) d.linkLost();
    }, graceMs);
  }

  /** BYEs for calls that ended while the link was down, then drop calls the server no longer knows. */
  private async afterReconnect(): Promise<void> {
    const byes = [...this.pendingByes];
    this.pendingByes.clear();
    for (const [id, headers] of byes)
      await this.srf.requestInDialog?.(id, 'BYE', headers).catch((err: unknown) => {
        this.log.info({ stackDialogId: id, err: (err as Error).message }, 'late BYE not sent (dialog gone)');
      });
    for (const d of [...this.dialogs]) {
      if (await d.stillKnown()) continue;
      this.log.warn({ sipCallId: d.callId }, 'drachtio-server no longer knows this dialog (it restarted): ending call');
      d.forget();
    }
  }

  linkUp(): boolean {
    return this.connected;
  }
  track(d: DrachtioDialog): void {
    this.dialogs.add(d);
  }
  untrack(d: DrachtioDialog): void {
    this.dialogs.delete(d);
  }
  byeWhenBack(stackDialogId: string, headers: Record<string, string>): void {
    // Bounded by the calls we had: one entry per dialog, dropped once sent.
    this.pendingByes.set(stackDialogId, headers);
  }

  /** An outbound INVITE through drachtio-server (OpenAI SIP route, API dial-out). */
  invite(opts: InviteOptions): Promise<PlacedInvite> {
    return placeInvite(this, opts, this.log);
  }

  ready(): boolean {
    return this.connected;
  }

  describe(): Record<string, unknown> {
    return {
      engine: 'drachtio',
      server: this.server,
      connected: this.connected,
      sip: this.hostPort,
      calls: this.dialogs.size,
    };
  }

  drain(): void {
    this.draining = true;
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.merged.clear();
    clearTimeout(this.graceTimer);
    try {
      this.srf.disconnect();
    } catch (err) {
      // drachtio-srf throws when it never had a connection (server unreachable since start).
      this.log.debug({ err: (err as Error).message }, 'drachtio disconnect without a connection');
    }
    this.connected = false;
    return Promise.resolve();
  }
}
