import { randomBytes } from 'node:crypto';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { DigestSession } from './digest-client.js';
import { assertHeaderValue } from './header-check.js';
import { parseUri, parseVia, type SipRequest, type SipResponse } from './message.js';
import { contactUriFor, grantedExpiry, registerRequest } from './register-message.js';
import { RegistrarKeepAlive } from './registrar-keepalive.js';
import type { SipTarget, SipTransport } from './srv.js';

export { grantedExpiry } from './register-message.js';

/**
 * Outbound registration of one trunk (RFC 3261 §10): REGISTER with digest, refresh before the
 * expiry the registrar granted, 423 → Min-Expires, failures retried with capped exponential
 * backoff and jitter, re-REGISTER when the TCP/TLS flow drops, public address learnt from the
 * 200's Via received/rport (RFC 3581), NAT keep-alives, and `Expires: 0` on stop. The SIP engine is
 * reached through RegistrarLink so this file holds only the registration logic; the messages are
 * built in register-message.ts and the keep-alives run in registrar-keepalive.ts.
 */
export interface RegistrationConfig {
  trunk: string;
  /** Registrar: a SIP URI (`sip:reg.carrier.net;transport=tcp`) or host[:port]. */
  registrar: string;
  /** AoR domain (default: the registrar's host). */
  domain?: string;
  username: string;
  /** Digest user when it differs from the AoR user. */
  authUsername?: string;
  password: string;
  realm?: string;
  expiresSec: number;
  transport: SipTransport;
  /** User part of our Contact (default: username). */
  contactUser?: string;
  /** NAT keep-alive interval (0: off). */
  keepAliveSec: number;
  /** UDP keep-alive: a CRLF datagram, or OPTIONS (which also tells us when the registrar is gone). */
  udpKeepAlive: 'crlf' | 'options';
  retryMinSec: number;
  retryMaxSec: number;
}

/** What registration needs from the SIP engine. */
export interface RegistrarLink {
  /** Non-INVITE client transaction; resolves with the final response, rejects on timeout/transport error. */
  request(req: SipRequest, target: SipTarget, timeoutMs: number): Promise<SipResponse>;
  /** Targets for the registrar URI, in failover order (RFC 3263). */
  resolve(uri: string, transport: SipTransport): Promise<SipTarget[]>;
  /** Open/keep a stream connection to target (TCP/TLS); `onClose` runs once when it drops. */
  holdFlow(target: SipTarget, onClose: () => void): Promise<{ release(): void }>;
  /** Send raw bytes (keep-alive) to target over its flow or UDP. */
  sendRaw(buf: Buffer, target: SipTarget): void;
  /** The address and port we advertise for a transport (configured or learnt). */
  advertised(transport: SipTransport): { address: string; port: number };
  /** The public address was configured (learning from received/rport is off). */
  readonly publicAddressFixed: boolean;
  /** Tell the engine what the registrar saw as our address (used in Contact/SDP from now on). */
  learnPublicAddress(address: string, port: number, transport: SipTransport): void;
  readonly userAgent: string;
}

export type RegistrationState = 'idle' | 'registering' | 'registered' | 'failing' | 'stopped';

export interface RegistrationStatus {
  trunk: string;
  state: RegistrationState;
  aor: string;
  registrar: string;
  /** Where the last REGISTER went. */
  target: string | undefined;
  contact: string | undefined;
  /** Seconds granted by the registrar on the last 2xx. */
  grantedExpiresSec: number | undefined;
  registeredAt: string | undefined;
  expiresAt: string | undefined;
  lastStatus: number | undefined;
  lastReason: string | undefined;
  /** Consecutive failed attempts. */
  failures: number;
  /** REGISTERs sent (including digest rounds) and bindings confirmed since start. */
  sent: number;
  confirmed: number;
  nextAttemptAt: string | undefined;
}

export interface RegistrationEvents {
  /** Once per state change (not per refresh). */
  onStateChange?(status: RegistrationStatus, previous: RegistrationState): void;
  /** Every failed attempt, with the SIP status (or 408 for no answer / 503 for transport errors). */
  onFailure?(trunk: string, status: number): void;
  /** Every REGISTER sent (tests count them). */
  onSend?(trunk: string, expires: number): void;
}

/**
 * A REGISTER unanswered this long counts as a failure (shorter than timer F's 32 s: a registrar that
 * slow is down for our purposes, and a REGISTER lost on a dying TCP flow must not stall re-registration).
 */
const REQUEST_TIMEOUT_MS = 10_000;
const UNREGISTER_TIMEOUT_MS = 4_000;
/** Refuse Min-Expires above this: a registrar demanding more is misconfigured. */
const MAX_MIN_EXPIRES = 86_400;

export class TrunkRegistration {
  private state: RegistrationState = 'idle';
  private readonly callId = `${randomBytes(12).toString('hex')}`;
  private readonly localTag = randomBytes(6).toString('hex');
  private cseq = Math.floor(Math.random() * 1000) + 1;
  private readonly digest: DigestSession;
  private readonly aor: string;
  private readonly registrarUri: string;
  private expires: number;
  private timer: NodeJS.Timeout | undefined;
  private readonly keepAlive: RegistrarKeepAlive;
  private flow: { release(): void } | undefined;
  private target: SipTarget | undefined;
  private resolved = new Set<string>();
  /** The Contact we registered (to remove on un-REGISTER or when the address changes). */
  private boundContact: string | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private readonly status: Omit<RegistrationStatus, 'trunk' | 'state' | 'aor' | 'registrar'> = {
    target: undefined,
    contact: undefined,
    grantedExpiresSec: undefined,
    registeredAt: undefined,
    expiresAt: undefined,
    lastStatus: undefined,
    lastReason: undefined,
    failures: 0,
    sent: 0,
    confirmed: 0,
    nextAttemptAt: undefined,
  };

  constructor(
    private readonly cfg: RegistrationConfig,
    private readonly link: RegistrarLink,
    private readonly log: Logger,
    private readonly events: RegistrationEvents = {},
    private readonly random: () => number = Math.random,
  ) {
    for (const [v, what] of [
      [cfg.username, 'register.username'],
      [cfg.contactUser ?? '', 'register.contactUser'],
      [cfg.domain ?? '', 'register.domain'],
    ] as const)
      assertHeaderValue(v, `trunk ${cfg.trunk}: ${what}`, /[\s<>"@;:,]/);
    this.registrarUri = /^sips?:/i.test(cfg.registrar) ? cfg.registrar : `sip:${cfg.registrar}`;
    const reg = parseUri(this.registrarUri);
    if (!reg || !reg.host)
      throw new GatewayError('config_invalid', `trunk ${cfg.trunk}: register.registrar is not a SIP URI or host`);
    const domain = cfg.domain ?? reg.host;
    this.aor = `sip:${cfg.username}@${domain.includes(':') && !domain.startsWith('[') ? `[${domain}]` : domain}`;
    this.expires = cfg.expiresSec;
    this.keepAlive = new RegistrarKeepAlive(
      link,
      log,
      cfg,
      { aor: this.aor, registrarUri: this.registrarUri },
      () => (this.state === 'registered' ? this.target : undefined),
      () => this.kick(),
    );
    this.digest = new DigestSession({
      username: cfg.authUsername ?? cfg.username,
      password: cfg.password,
      realm: cfg.realm,
    });
  }

  get trunk(): string {
    return this.cfg.trunk;
  }

  /** The user part of the Contact we register (inbound INVITEs to it belong to this trunk). */
  get contactUser(): string {
    return this.cfg.contactUser ?? this.cfg.username;
  }

  get username(): string {
    return this.cfg.username;
  }

  /** The registrar's addresses as last resolved (for `requireRegistrarSource`). */
  get registrarAddresses(): ReadonlySet<string> {
    return this.resolved;
  }

  snapshot(): RegistrationStatus {
    return {
      trunk: this.cfg.trunk,
      state: this.state,
      aor: this.aor,
      registrar: this.registrarUri,
      ...this.status,
    };
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.setState('registering');
    this.kick();
  }

  /** Register now (first time, refresh, after a flow drop or an address change). */
  private kick(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.state === 'stopped') return;
    if (this.running) {
      this.again = true; // asked for during an attempt (e.g. its 200 changed our address): once more after it
      return;
    }
    this.running = this.attempt().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.kick();
      }
    });
  }

  private schedule(ms: number, why: 'refresh' | 'retry'): void {
    clearTimeout(this.timer);
    if (this.state === 'stopped') return;
    this.status.nextAttemptAt = new Date(Date.now() + ms).toISOString();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.log.debug({ trunk: this.cfg.trunk, why }, 'REGISTER due');
      this.kick();
    }, ms);
  }

  private setState(next: RegistrationState): void {
    const prev = this.state;
    if (prev === next) return;
    this.state = next;
    const s = this.snapshot();
    const facts = {
      trunk: s.trunk,
      state: next,
      previous: prev,
      aor: s.aor,
      target: s.target,
      lastStatus: s.lastStatus,
      lastReason: s.lastReason,
      expiresSec: s.grantedExpiresSec,
      nextAttemptAt: next === 'failing' ? s.nextAttemptAt : undefined,
    };
    if (next === 'failing') this.log.warn(facts, 'trunk registration failing');
    else this.log.info(facts, `trunk registration ${next}`);
    this.events.onStateChange?.(s, prev);
  }

  private contactUri(): string {
    const t = this.cfg.transport;
    return contactUriFor(this.registrarUri, this.contactUser, t, this.link.advertised(t));
  }

  private buildRegister(contacts: string[], expires: number): SipRequest {
    const ids = { aor: this.aor, callId: this.callId, localTag: this.localTag, cseq: ++this.cseq };
    const req = registerRequest(ids, this.registrarUri, contacts, expires);
    const auth = this.digest.authorize('REGISTER', req.uri);
    if (auth) req.headers.add(auth.name, auth.value);
    return req;
  }

  /**
   * One REGISTER exchange including its digest round and 423 retry, against each target in turn
   * until one answers. Returns the final response, or undefined when no target answered.
   */
  private async exchange(
    contacts: () => string[],
    expires: () => number,
    on423?: (res: SipResponse) => boolean,
  ): Promise<SipResponse | undefined> {
    let targets: SipTarget[];
    try {
      targets = await this.link.resolve(this.registrarUri, this.cfg.transport);
      this.resolved = new Set(targets.map((t) => t.address));
    } catch (err) {
      this.status.lastReason = (err as Error).message;
      return undefined;
    }
    for (const target of targets) {
      if (this.state === 'stopped' && expires() !== 0) return undefined;
      this.target = target;
      this.status.target = `${target.transport}:${target.address}:${target.port}`;
      try {
        if (target.transport !== 'udp' && !this.flow) await this.openFlow(target);
        let retried = false;
        let intervalRetries = 0;
        for (;;) {
          const exp = expires();
          const req = this.buildRegister(contacts(), exp);
          this.status.sent++;
          this.events.onSend?.(this.cfg.trunk, exp);
          const res = await this.link.request(req, target, exp === 0 ? UNREGISTER_TIMEOUT_MS : REQUEST_TIMEOUT_MS);
          if (res.status === 401 || res.status === 407) {
            const v = this.digest.onChallenge(res.status, res.headers, retried);
            if (!v.ok) {
              this.status.lastReason = `${res.status} ${res.reason} (${v.why === 'rejected' ? 'credentials refused' : v.why})`;
              return res;
            }
            retried = true;
            continue;
          }
          if (res.status === 423 && on423 && intervalRetries++ < 2 && on423(res)) continue;
          if (res.status === 503 && targets.indexOf(target) < targets.length - 1) {
            this.log.info({ trunk: this.cfg.trunk, target: this.status.target }, 'registrar 503: trying the next one');
            break;
          }
          return res;
        }
      } catch (err) {
        this.status.lastReason = (err as Error).message;
        this.dropFlow();
        this.log.debug({ trunk: this.cfg.trunk, err: (err as Error).message }, 'REGISTER got no answer');
      }
    }
    return undefined;
  }

  private async openFlow(target: SipTarget): Promise<void> {
    const flow = await this.link.holdFlow(target, () => {
      if (this.flow !== flow) return;
      this.flow = undefined;
      if (this.state === 'stopped') return;
      this.log.info({ trunk: this.cfg.trunk, target: this.status.target }, 'registration flow closed: re-registering');
      // A new connection means a new flow: the binding over the old one is useless (RFC 5626 §4.4).
      this.kick();
    });
    this.flow = flow;
  }

  private dropFlow(): void {
    const f = this.flow;
    this.flow = undefined;
    f?.release();
  }

  private async attempt(): Promise<void> {
    const contact = this.contactUri();
    const stale = this.boundContact && this.boundContact !== contact ? this.boundContact : undefined;
    const res = await this.exchange(
      () => [`<${this.contactUri()}>`, ...(stale ? [`<${stale}>;expires=0`] : [])],
      () => this.expires,
      (r) => {
        const min = Number(r.headers.get('min-expires'));
        if (!Number.isInteger(min) || min <= this.expires || min > MAX_MIN_EXPIRES) return false;
        this.log.info({ trunk: this.cfg.trunk, minExpires: min }, '423 Interval Too Brief: using Min-Expires');
        this.expires = min;
        return true;
      },
    );
    if (this.state === 'stopped') return;
    if (!res) return this.fail(408, this.status.lastReason ?? 'no answer from the registrar');
    if (res.status >= 300) {
      const retryAfter = res.status === 503 ? Number(res.headers.get('retry-after')) : NaN;
      return this.fail(res.status, this.status.lastReason ?? `${res.status} ${res.reason}`, retryAfter);
    }
    this.onRegistered(res);
  }

  private onRegistered(res: SipResponse): void {
    const mine = this.contactUri();
    const granted = grantedExpiry(res, mine, this.expires);
    if (granted <= 0) return this.fail(res.status, 'registrar returned our contact with expires=0');
    const now = Date.now();
    this.boundContact = mine;
    Object.assign(this.status, {
      contact: mine,
      grantedExpiresSec: granted,
      registeredAt: new Date(now).toISOString(),
      expiresAt: new Date(now + granted * 1000).toISOString(),
      lastStatus: res.status,
      lastReason: res.reason,
      failures: 0,
      confirmed: this.status.confirmed + 1,
    });
    // Refresh with margin: half way for short bindings, a minute early for long ones.
    const refreshSec = granted <= 60 ? granted / 2 : Math.max(granted / 2, granted - 60);
    this.schedule(refreshSec * 1000, 'refresh');
    this.setState('registered');
    this.keepAlive.arm();
    if (this.learnAddress(res)) this.kick(); // our Contact changed: bind the new one now
  }

  /** RFC 3581: the address the registrar saw. True when it changed what we advertise. */
  private learnAddress(res: SipResponse): boolean {
    if (this.link.publicAddressFixed) return false;
    const via = parseVia(res.headers.get('via') ?? '');
    const received = via?.params.received;
    const rport = Number(via?.params.rport);
    if (!received && !rport) return false;
    const t = this.cfg.transport;
    const now = this.link.advertised(t);
    const address = received || now.address;
    // Over TCP/TLS the source port is ephemeral: only the address is worth learning.
    const port = t === 'udp' && Number.isInteger(rport) && rport > 0 ? rport : now.port;
    if (address === now.address && port === now.port) return false;
    this.log.info(
      { trunk: this.cfg.trunk, was: `${now.address}:${now.port}`, now: `${address}:${port}` },
      'public address learnt from the registrar (received/rport)',
    );
    this.link.learnPublicAddress(address, port, t);
    return true;
  }

  private fail(status: number, reason: string, retryAfterSec = NaN): void {
    this.status.lastStatus = status;
    this.status.lastReason = reason;
    this.status.failures++;
    this.events.onFailure?.(this.cfg.trunk, status);
    this.digest.reset();
    this.dropFlow();
    this.keepAlive.stop();
    // Capped exponential backoff with jitter (50–100 %): a refused account must not hammer the carrier.
    const exp = Math.min(this.cfg.retryMaxSec, this.cfg.retryMinSec * 2 ** (this.status.failures - 1));
    let delaySec = exp * (0.5 + this.random() * 0.5);
    if (Number.isFinite(retryAfterSec) && retryAfterSec > 0) delaySec = Math.min(retryAfterSec, 3600);
    this.schedule(delaySec * 1000, 'retry');
    if (this.state === 'failing') {
      this.log.debug({ trunk: this.cfg.trunk, status, failures: this.status.failures }, 'registration still failing');
    }
    this.setState('failing');
  }

  /** Stop refreshing and remove our binding (`Expires: 0`); resolves when answered or timed out. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    const wasBound = !!this.boundContact;
    this.setState('stopped');
    clearTimeout(this.timer);
    this.timer = undefined;
    this.status.nextAttemptAt = undefined;
    this.keepAlive.stop();
    await this.running?.catch(() => undefined);
    if (wasBound) {
      const contact = this.boundContact!;
      const res = await this.exchange(
        () => [`<${contact}>;expires=0`],
        () => 0,
      ).catch(() => undefined);
      this.boundContact = undefined;
      this.log.info(
        { trunk: this.cfg.trunk, status: res?.status, reason: res?.reason ?? this.status.lastReason },
        res && res.status < 300 ? 'trunk unregistered' : 'un-REGISTER not confirmed',
      );
    }
    this.dropFlow();
  }
}
