import type { Logger } from '../core/logger.js';
import { keepAliveOptions } from './register-message.js';
import type { RegistrarLink } from './registration.js';
import type { SipTarget } from './srv.js';

/** A keep-alive OPTIONS unanswered this long (as long as a REGISTER may take) means the registrar is gone. */
const OPTIONS_TIMEOUT_MS = 10_000;

/**
 * NAT keep-alives for a registered trunk: RFC 5626 §3.5.1 CRLFCRLF pings over TCP/TLS, and over UDP
 * a bare CRLF (keeps the pinhole open) or an OPTIONS (which also notices a dead registrar and then
 * asks for a re-REGISTER through `onLost`).
 */
export class RegistrarKeepAlive {
  private interval: NodeJS.Timeout | undefined;

  constructor(
    private readonly link: RegistrarLink,
    private readonly log: Logger,
    private readonly cfg: { trunk: string; keepAliveSec: number; udpKeepAlive: 'crlf' | 'options' },
    private readonly ids: { aor: string; registrarUri: string },
    /** The registrar we are bound at, or undefined while not registered (no keep-alive then). */
    private readonly boundTarget: () => SipTarget | undefined,
    private readonly onLost: () => void,
  ) {}

  arm(): void {
    this.stop();
    const sec = this.cfg.keepAliveSec;
    if (sec <= 0) return;
    this.interval = setInterval(() => this.send(), sec * 1000);
    this.interval.unref();
  }

  stop(): void {
    clearInterval(this.interval);
    this.interval = undefined;
  }

  private send(): void {
    const target = this.boundTarget();
    if (!target) return;
    if (target.transport !== 'udp' || this.cfg.udpKeepAlive === 'crlf') {
      // RFC 5626 §3.5.1: CRLFCRLF ping over streams; a bare CRLF keeps a UDP NAT pinhole open.
      this.link.sendRaw(Buffer.from(target.transport === 'udp' ? '\r\n' : '\r\n\r\n'), target);
      return;
    }
    const req = keepAliveOptions(this.ids.aor, this.ids.registrarUri);
    this.link.request(req, target, OPTIONS_TIMEOUT_MS).catch((err: unknown) => {
      if (!this.boundTarget()) return;
      this.log.info(
        { trunk: this.cfg.trunk, err: (err as Error).message },
        'registrar keep-alive unanswered: re-registering',
      );
      this.onLost();
    });
  }
}
