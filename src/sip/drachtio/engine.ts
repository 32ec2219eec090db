import Srf from 'drachtio-srf';
import { GatewayError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type {
  IncomingInvite,
  IncomingInviteEvents,
  ModifyRequest,
  SipDialog,
  SipDialogEvents,
  SipEngine,
  SipEngineEvents,
  SourceAddress,
} from '../engine.js';

/**
 * The drachtio engine: a drachtio-server owns the SIP sockets and transactions (retransmissions,
 * ACK timeouts, CANCEL → 487, TCP/TLS) and we drive it through drachtio-srf over its control
 * connection. Everything above SIP (trunks, media, AI) is the same front as the embedded engine.
 *
 * Only the slice of drachtio-srf we use is typed here (SrfLike, DialogLike) so the mapping can be
 * unit-tested with fakes: no drachtio-server can run in CI.
 */
export interface SrfRequestLike {
  method: string;
  uri: string;
  body: string;
  source_address: string;
  source_port: string | number;
  protocol: string;
  get(name: string): string | undefined;
  has(name: string): boolean;
  on(event: 'cancel', fn: () => void): void;
}

export interface SrfResponseLike {
  send(status: number, reasonOrOpts?: string | object, opts?: object): void;
  finalResponseSent?: boolean;
}

export interface DialogLike {
  sip: { callId: string };
  /** The far end's session description (a delayed offer's answer arrives with the ACK). */
  remote?: { sdp?: string };
  on(event: 'destroy', fn: (msg?: unknown) => void): unknown;
  on(event: 'modify' | 'update', fn: (req: SrfRequestLike, res: SrfResponseLike) => void): unknown;
  destroy(opts?: { headers: Record<string, string> }): Promise<unknown> | void;
  request(opts: {
    method: string;
    headers?: Record<string, string>;
    body?: string;
  }): Promise<{ status: number; reason?: string }>;
}

export interface SrfLike {
  connect(opts: { host: string; port: number; secret: string }): unknown;
  disconnect(): void;
  on(event: 'connect', fn: (err: Error | null, hostPort: string) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  on(event: 'disconnect', fn: () => void): unknown;
  invite(fn: (req: SrfRequestLike, res: SrfResponseLike) => void): void;
  options(fn: (req: SrfRequestLike, res: SrfResponseLike) => void): void;
  createUAS(
    req: SrfRequestLike,
    res: SrfResponseLike,
    opts: { localSdp: string; headers?: Record<string, string> },
  ): Promise<DialogLike>;
}

export interface DrachtioEngineOptions {
  host: string;
  port: number;
  secret: string;
  log: Logger;
  /** Tests pass a fake; production uses drachtio-srf. */
  srf?: SrfLike;
}

export class DrachtioEngine extends TypedEmitter<SipEngineEvents> implements SipEngine {
  readonly name = 'drachtio' as const;
  /** No refresh() on its dialogs yet: the carrier stays the session refresher (RFC 4028). */
  readonly canRefresh = false;
  private readonly srf: SrfLike;
  private readonly log: Logger;
  private connected = false;
  private hostPort = '';

  constructor(private readonly opts: DrachtioEngineOptions) {
    super();
    this.log = opts.log.child({ component: 'sip-drachtio' });
    this.srf = opts.srf ?? (new Srf() as unknown as SrfLike);
  }

  start(): Promise<void> {
    const { srf } = this;
    srf.on('connect', (err, hostPort) => {
      if (err) return this.log.error({ err: err.message }, 'drachtio connect failed');
      this.connected = true;
      this.hostPort = hostPort;
      this.log.info({ hostPort }, 'connected to drachtio-server');
    });
    srf.on('error', (err) => {
      // drachtio-srf reconnects by itself; an operator needs to see that SIP is down meanwhile.
      this.connected = false;
      this.log.error({ err: err.message }, 'drachtio connection error');
    });
    srf.on('disconnect', () => {
      this.connected = false;
      this.log.warn('disconnected from drachtio-server');
    });
    srf.invite((req, res) => {
      try {
        this.emit('invite', new DrachtioInvite(srf, req, res, this.log));
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'INVITE handling failed');
        res.send(500);
      }
    });
    srf.options((_req, res) =>
      res.send(200, { headers: { Allow: 'INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY' } }),
    );
    srf.connect({ host: this.opts.host, port: this.opts.port, secret: this.opts.secret });
    return Promise.resolve();
  }

  ready(): boolean {
    return this.connected;
  }

  describe(): Record<string, unknown> {
    return {
      engine: 'drachtio',
      server: `${this.opts.host}:${this.opts.port}`,
      connected: this.connected,
      sip: this.hostPort,
    };
  }

  stop(): Promise<void> {
    this.srf.disconnect();
    this.connected = false;
    return Promise.resolve();
  }
}

export class DrachtioInvite extends TypedEmitter<IncomingInviteEvents> implements IncomingInvite {
  readonly callId: string;
  readonly source: SourceAddress;
  cancelled = false;
  private final = false;

  constructor(
    private readonly srf: SrfLike,
    private readonly req: SrfRequestLike,
    private readonly res: SrfResponseLike,
    private readonly log: Logger,
  ) {
    super();
    this.callId = req.get('Call-ID') ?? '';
    this.source = {
      address: req.source_address,
      port: Number(req.source_port),
      transport: req.protocol?.toLowerCase() === 'tcp' ? 'tcp' : 'udp',
    };
    // drachtio-server already answered the CANCEL with 200 and the INVITE with 487.
    req.on('cancel', () => {
      this.cancelled = true;
      this.final = true;
      this.emit('cancel');
    });
  }

  get requestUri(): string {
    return this.req.uri;
  }
  get from(): string {
    return this.req.get('From') ?? '';
  }
  get to(): string {
    return this.req.get('To') ?? '';
  }
  get sdp(): string | undefined {
    return this.req.body?.trim() ? this.req.body : undefined;
  }
  ackSdp: string | undefined;
  header(name: string): string | undefined {
    return this.req.has(name) ? this.req.get(name) : undefined;
  }

  progress(status: 180 | 183): void {
    if (!this.final) this.res.send(status);
  }

  reject(status: number, reason?: string, headers: Record<string, string> = {}): void {
    if (this.final) return;
    this.final = true;
    if (reason) this.res.send(status, reason, { headers });
    else this.res.send(status, { headers });
  }

  async answer(sdp: string, headers: Record<string, string> = {}): Promise<SipDialog> {
    if (this.cancelled) throw new GatewayError('leg_closed', 'INVITE was cancelled');
    if (this.final) throw new GatewayError('invalid_state', 'INVITE already answered');
    this.final = true;
    const dialog = await this.srf.createUAS(this.req, this.res, { localSdp: sdp, headers });
    if (!this.sdp) this.ackSdp = dialog.remote?.sdp?.trim() ? dialog.remote.sdp : undefined;
    return new DrachtioDialog(dialog, this.callId, this.log);
  }
}

export class DrachtioDialog extends TypedEmitter<SipDialogEvents> implements SipDialog {
  private gone = false;

  constructor(
    private readonly dialog: DialogLike,
    readonly callId: string,
    private readonly log: Logger,
  ) {
    super();
    // 'destroy' is drachtio's "the far end sent BYE" (our own destroy() does not emit it).
    dialog.on('destroy', () => {
      if (this.gone) return;
      this.gone = true;
      this.emit('bye');
      this.emit('destroyed');
    });
    const onModify = (req: SrfRequestLike, res: SrfResponseLike) => {
      let answered = false;
      const m: ModifyRequest = {
        method: req.method === 'UPDATE' ? 'UPDATE' : 'INVITE',
        sdp: req.body?.trim() ? req.body : undefined,
        header: (name) => (req.has(name) ? req.get(name) : undefined),
        // onAck is not called: srf does not hand us the ACK of a re-INVITE.
        respond: (a) => {
          if (answered) return;
          answered = true;
          if ('status' in a) return void res.send(a.status, a.reason ?? '', { headers: a.headers ?? {} });
          if (a.sdp === undefined) return void res.send(200, { headers: a.headers ?? {} });
          res.send(200, { body: a.sdp, headers: { 'Content-Type': 'application/sdp', ...a.headers } });
        },
      };
      this.emit('modify', m);
      if (!answered) m.respond({ status: 488 });
    };
    dialog.on('modify', onModify);
    dialog.on('update', onModify);
  }

  async bye(reason = 'normal'): Promise<void> {
    if (this.gone) return;
    this.gone = true;
    try {
      await this.dialog.destroy({ headers: { Reason: `Q.850;cause=16;text="${reason.replace(/"/g, '')}"` } });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'BYE via drachtio failed');
    }
    this.emit('destroyed');
  }

  async refer(target: string, timeoutMs = 8000): Promise<void> {
    if (this.gone) throw new GatewayError('leg_closed', 'dialog is gone');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new GatewayError('timeout', `no answer to REFER within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const res = await Promise.race([
        this.dialog.request({ method: 'REFER', headers: { 'Refer-To': `<${target}>` } }),
        timeout,
      ]);
      if (res.status >= 300)
        throw new GatewayError('upstream', `REFER rejected: ${res.status} ${res.reason ?? ''}`.trim());
    } finally {
      clearTimeout(timer);
    }
  }
}
