import { randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { GatewayError } from '../core/errors.js';

/**
 * RTP/RTCP wire helpers (RFC 3550) and the per-call UDP port pair pool. Written here rather than
 * taken from werift: its RTP classes are tied to its own transports and allocate per packet;
 * a G.711 leg needs a 12-byte header parse/build and a few RTCP fields, nothing more.
 */
export interface RtpHeaderFields {
  payloadType: number;
  marker: boolean;
  seq: number;
  timestamp: number;
  ssrc: number;
}

export interface ParsedRtp extends RtpHeaderFields {
  payload: Buffer;
}

export type RtpParse = { ok: true; pkt: ParsedRtp } | { ok: false; why: 'short' | 'version' | 'padding' | 'rtcp' };

export function parseRtp(buf: Buffer): RtpParse {
  if (buf.length < 12) return { ok: false, why: 'short' };
  const b0 = buf[0]!;
  if (b0 >> 6 !== 2) return { ok: false, why: 'version' };
  const pt = buf[1]! & 0x7f;
  if (pt >= 72 && pt <= 76) return { ok: false, why: 'rtcp' }; // RTCP multiplexed onto the RTP port
  const cc = b0 & 0x0f;
  let off = 12 + cc * 4;
  if (b0 & 0x10) {
    if (buf.length < off + 4) return { ok: false, why: 'short' };
    off += 4 + buf.readUInt16BE(off + 2) * 4;
  }
  let end = buf.length;
  if (b0 & 0x20) {
    const pad = buf[buf.length - 1]!;
    if (pad === 0 || pad > end - off) return { ok: false, why: 'padding' };
    end -= pad;
  }
  if (off > end) return { ok: false, why: 'short' };
  return {
    ok: true,
    pkt: {
      payloadType: pt,
      marker: (buf[1]! & 0x80) !== 0,
      seq: buf.readUInt16BE(2),
      timestamp: buf.readUInt32BE(4),
      ssrc: buf.readUInt32BE(8),
      payload: buf.subarray(off, end),
    },
  };
}

export function buildRtp(h: RtpHeaderFields, payload: Buffer): Buffer {
  const buf = Buffer.allocUnsafe(12 + payload.length);
  buf[0] = 0x80;
  buf[1] = (h.marker ? 0x80 : 0) | (h.payloadType & 0x7f);
  buf.writeUInt16BE(h.seq & 0xffff, 2);
  buf.writeUInt32BE(h.timestamp >>> 0, 4);
  buf.writeUInt32BE(h.ssrc >>> 0, 8);
  payload.copy(buf, 12);
  return buf;
}

export interface ReceptionReport {
  ssrc: number;
  fractionLost: number; // 0..255
  cumulativeLost: number;
  highestSeq: number; // extended
  jitter: number; // timestamp units
  lsr: number;
  dlsr: number;
}

const NTP_EPOCH_OFFSET = 2208988800;

/** Sender Report (with our send counts) or Receiver Report when we have sent nothing. */
export function buildRtcpReport(
  ssrc: number,
  sender: { rtpTimestamp: number; packets: number; octets: number } | undefined,
  report: ReceptionReport | undefined,
): Buffer {
  const rc = report ? 1 : 0;
  const len = 8 + (sender ? 20 : 0) + rc * 24;
  const b = Buffer.alloc(len);
  b[0] = 0x80 | rc;
  b[1] = sender ? 200 : 201;
  b.writeUInt16BE(len / 4 - 1, 2);
  b.writeUInt32BE(ssrc >>> 0, 4);
  let o = 8;
  if (sender) {
    const now = Date.now() / 1000 + NTP_EPOCH_OFFSET;
    b.writeUInt32BE(Math.floor(now) >>> 0, o);
    b.writeUInt32BE(Math.floor((now % 1) * 2 ** 32) >>> 0, o + 4);
    b.writeUInt32BE(sender.rtpTimestamp >>> 0, o + 8);
    b.writeUInt32BE(sender.packets >>> 0, o + 12);
    b.writeUInt32BE(sender.octets >>> 0, o + 16);
    o += 20;
  }
  if (report) {
    b.writeUInt32BE(report.ssrc >>> 0, o);
    b.writeUInt32BE(
      ((report.fractionLost & 0xff) << 24) | (Math.max(0, Math.min(report.cumulativeLost, 0x7fffff)) & 0xffffff),
      o + 4,
    );
    b.writeUInt32BE(report.highestSeq >>> 0, o + 8);
    b.writeUInt32BE(Math.max(0, Math.round(report.jitter)) >>> 0, o + 12);
    b.writeUInt32BE(report.lsr >>> 0, o + 16);
    b.writeUInt32BE(report.dlsr >>> 0, o + 20);
  }
  return b;
}

/** The middle 32 bits of an incoming SR's NTP time (for LSR), or undefined if not an SR. */
export function srNtpMiddle(buf: Buffer): number | undefined {
  if (buf.length < 28 || buf[0]! >> 6 !== 2 || buf[1] !== 200) return undefined;
  return ((buf.readUInt32BE(8) & 0xffff) << 16) | (buf.readUInt32BE(12) >>> 16);
}

export interface RtpPorts {
  port: number;
  rtp: Socket;
  rtcp: Socket;
  release(): Promise<void>;
}

/**
 * Even/odd UDP port pairs (RTP on the even port, RTCP on the next) from a configured range. Owned
 * by one front (no process-wide state); a pair returns to the pool when its leg closes. The search
 * starts at a random pair, so a stranger cannot predict the next call's port from the last one.
 */
export class RtpPortPool {
  private readonly inUse = new Set<number>();

  /** `host6`: where IPv6 media binds (IN IP6 offers); without it only IPv4 pairs are handed out. */
  constructor(
    private readonly host: string,
    private readonly min: number,
    private readonly max: number,
    private readonly host6?: string,
  ) {}

  get used(): number {
    return this.inUse.size;
  }

  async allocate(callId?: string, family: 4 | 6 = 4): Promise<RtpPorts> {
    if (family === 6 && !this.host6) throw new GatewayError('config_invalid', 'no IPv6 address for media', callId);
    const first = this.min + (this.min % 2);
    const slots = Math.floor((this.max - 1 - first) / 2) + 1;
    const start = slots > 0 ? randomInt(slots) : 0;
    for (let i = 0; i < slots; i++) {
      const port = first + ((start + i) % slots) * 2;
      if (this.inUse.has(port)) continue;
      this.inUse.add(port);
      const pair = await this.bindPair(port, family).catch(() => undefined);
      if (pair) return pair;
      this.inUse.delete(port); // taken by another process: try the next pair
    }
    throw new GatewayError('limit_reached', `no free RTP port pair in ${this.min}-${this.max}`, callId);
  }

  private async bindPair(port: number, family: 4 | 6): Promise<RtpPorts> {
    const host = family === 6 ? this.host6! : this.host;
    const bind = (p: number) =>
      new Promise<Socket>((resolve, reject) => {
        const s = createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only: family === 6 });
        s.once('error', (e) => {
          s.close();
          reject(e);
        });
        s.bind(p, host, () => {
          s.removeAllListeners('error');
          resolve(s);
        });
      });
    const rtp = await bind(port);
    let rtcp: Socket;
    try {
      rtcp = await bind(port + 1);
    } catch (e) {
      rtp.close();
      throw e;
    }
    let released = false;
    return {
      port,
      rtp,
      rtcp,
      release: async () => {
        if (released) return;
        released = true;
        await Promise.all([rtp, rtcp].map((s) => new Promise<void>((r) => s.close(() => r()))));
        this.inUse.delete(port);
      },
    };
  }
}
