import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { parseMessage, type SipMessage } from '../../../src/sip/message.js';

/**
 * A scriptable SIP endpoint over UDP for engine tests that need exact control (dropped ACKs,
 * timing of retransmissions, raw garbage): it sends text and records every message with its time.
 */
export class RawSipPeer {
  readonly received: { msg: SipMessage; at: number }[] = [];
  /** Called for every message as it arrives (e.g. to answer the gateway's BYEs automatically). */
  onMessage: ((msg: SipMessage) => void) | undefined;
  /** Keep received messages (off for long soak runs). */
  keep = true;
  private sock: Socket | undefined;

  constructor(private readonly ip = '127.0.0.1') {}

  async start(): Promise<number> {
    const s = createSocket(isIP(this.ip) === 6 ? 'udp6' : 'udp4');
    this.sock = s;
    s.on('message', (buf) => {
      const p = parseMessage(buf);
      if (!p.ok) return;
      if (this.keep) this.received.push({ msg: p.msg, at: performance.now() });
      this.onMessage?.(p.msg);
    });
    await new Promise<void>((r) => s.bind(0, this.ip, () => r()));
    return this.port;
  }

  get port(): number {
    return this.sock!.address().port;
  }

  send(text: string, port: number, host = '127.0.0.1'): void {
    this.sock!.send(Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'latin1'), port, host);
  }

  /** Answer a request from the gateway (BYE, REFER, UPDATE...) with a body-less response. */
  reply(req: SipMessage, status: number, reason: string, port: number, host = '127.0.0.1'): void {
    const echo = ['via', 'from', 'to', 'call-id', 'cseq'].flatMap((h) =>
      req.headers.getAll(h).map((v) => `${h}: ${v}`),
    );
    this.send([`SIP/2.0 ${status} ${reason}`, ...echo, 'Content-Length: 0', '', ''].join('\r\n'), port, host);
  }

  async waitFor(pred: (m: SipMessage) => boolean, timeoutMs = 3000, what = 'SIP message'): Promise<SipMessage> {
    const t0 = Date.now();
    for (;;) {
      const hit = this.received.find((r) => pred(r.msg));
      if (hit) return hit.msg;
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  responses(status: number, method?: string): { msg: SipMessage; at: number }[] {
    return this.received.filter(
      (r) =>
        r.msg.kind === 'response' &&
        r.msg.status === status &&
        (!method || r.msg.headers.get('cseq')?.endsWith(method)),
    );
  }

  close(): void {
    this.sock?.close();
  }
}

export interface InviteParts {
  callId?: string;
  branch?: string;
  cseq?: number;
  fromTag?: string;
  toTag?: string;
  localPort: number;
  targetPort: number;
  sdp?: string;
  method?: string;
  extra?: string[];
}

export const newId = () => randomBytes(6).toString('hex');

export function sdpOffer(rtpPort: number, direction = 'sendrecv', codecs = '8 0 101'): string {
  return [
    'v=0',
    'o=carrier 1 1 IN IP4 127.0.0.1',
    's=-',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${rtpPort} RTP/AVP ${codecs}`,
    'a=rtpmap:8 PCMA/8000',
    'a=rtpmap:0 PCMU/8000',
    'a=rtpmap:101 telephone-event/8000',
    'a=fmtp:101 0-16',
    'a=ptime:20',
    `a=${direction}`,
    '',
  ].join('\r\n');
}

/** A request as a carrier would send it (INVITE by default). */
export function request(p: InviteParts): string {
  const method = p.method ?? 'INVITE';
  const body = p.sdp ?? '';
  return [
    `${method} sip:0700000001@127.0.0.1:${p.targetPort} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${p.localPort};branch=${p.branch ?? `z9hG4bK${newId()}`};rport`,
    `From: <sip:0788123456@127.0.0.1>;tag=${p.fromTag ?? 'carrier'}`,
    `To: <sip:0700000001@127.0.0.1>${p.toTag ? `;tag=${p.toTag}` : ''}`,
    `Call-ID: ${p.callId ?? newId()}`,
    `CSeq: ${p.cseq ?? 1} ${method === 'ACK' ? 'ACK' : method}`,
    `Contact: <sip:carrier@127.0.0.1:${p.localPort}>`,
    'Max-Forwards: 70',
    ...(p.extra ?? []),
    ...(body ? ['Content-Type: application/sdp'] : []),
    `Content-Length: ${Buffer.byteLength(body, 'latin1')}`,
    '',
    body,
  ].join('\r\n');
}
