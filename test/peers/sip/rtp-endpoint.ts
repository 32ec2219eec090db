import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import alawmulaw from 'alawmulaw';
import { sleep } from '../../support/gateway.js';

/**
 * The media side of a sipp party: sipp does the signalling with a scenario whose SDP points at
 * this socket, and this endpoint plays a tone (PCMA, 20 ms), sends RFC 4733 keypresses and
 * records what it receives (decoded audio with arrival times, and RFC 4733 events), so a test can
 * check both directions of a call. It answers to where the gateway's RTP comes from (symmetric RTP).
 */
export interface ReceivedEvent {
  digit: string;
  /** RTP timestamp of the event (one per key press). */
  timestamp: number;
  end: boolean;
  duration: number;
}

const EVENTS = '0123456789*#ABCD';

export class RtpEndpoint {
  private sock: Socket | undefined;
  private remote: RemoteInfo | undefined;
  private timer: NodeJS.Timeout | undefined;
  private seq = 1;
  private ts = 0;
  private phase = 0;
  private readonly ssrc = Math.floor(Math.random() * 0xffffffff);
  private dtmfQueue: { event: number; frames: number; sent: number; ends: number; ts: number }[] = [];
  /** Audio received, one 20 ms PCM frame (8 kHz) per packet, with its arrival time. */
  readonly heard: { at: number; pcm: Int16Array }[] = [];
  readonly events: ReceivedEvent[] = [];
  /** Tone to send (Hz); 0 sends silence. */
  freq = 0;

  async start(): Promise<number> {
    const s = createSocket('udp4');
    this.sock = s;
    s.on('message', (msg, rinfo) => this.onPacket(msg, rinfo));
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    this.timer = setInterval(() => this.tick(), 20);
    return s.address().port;
  }

  get port(): number {
    return this.sock!.address().port;
  }

  /** Press keys (RFC 4733, payload type 101): 5 progress packets and 3 end packets each, a gap between. */
  pressKeys(digits: string): void {
    for (const d of digits) this.dtmfQueue.push({ event: EVENTS.indexOf(d), frames: 5, sent: 0, ends: 0, ts: 0 });
  }

  /** Key presses received, one per event (end packets repeated by the sender count once). */
  digits(): string {
    const seen = new Set<number>();
    let out = '';
    for (const e of this.events) {
      if (!e.end || seen.has(e.timestamp)) continue;
      seen.add(e.timestamp);
      out += e.digit;
    }
    return out;
  }

  /** Received audio since `since` (performance.now()), concatenated. */
  audioSince(since = 0, until = Infinity): Int16Array {
    const parts = this.heard.filter((h) => h.at >= since && h.at < until).map((h) => h.pcm);
    const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  private onPacket(msg: Buffer, rinfo: RemoteInfo): void {
    if (msg.length < 12 || msg[0]! >> 6 !== 2) return;
    this.remote ??= rinfo;
    const pt = msg[1]! & 0x7f;
    const cc = msg[0]! & 0x0f;
    const payload = msg.subarray(12 + cc * 4);
    if (pt === 8 || pt === 0) {
      const pcm = pt === 8 ? alawmulaw.alaw.decode(payload) : alawmulaw.mulaw.decode(payload);
      this.heard.push({ at: performance.now(), pcm });
    } else if (pt === 101 && payload.length >= 4) {
      this.events.push({
        digit: EVENTS[payload[0]!] ?? '?',
        timestamp: msg.readUInt32BE(4),
        end: (payload[1]! & 0x80) !== 0,
        duration: payload.readUInt16BE(2),
      });
    }
  }

  private tick(): void {
    const s = this.sock;
    const to = this.remote;
    this.ts = (this.ts + 160) >>> 0;
    if (!s || !to) return;
    const d = this.dtmfQueue[0];
    if (d) {
      if (d.sent === 0 && d.ends === 0) d.ts = this.ts;
      const end = d.sent >= d.frames;
      const dur = Math.min(d.sent + 1, d.frames) * 160;
      const p = Buffer.from([d.event, (end ? 0x80 : 0) | 10, dur >> 8, dur & 0xff]);
      this.send(101, d.ts, p, d.sent === 0 && d.ends === 0);
      if (end) {
        if (++d.ends >= 3) this.dtmfQueue.shift();
      } else d.sent++;
      return;
    }
    const pcm = new Int16Array(160);
    for (let i = 0; i < 160; i++) {
      pcm[i] = this.freq > 0 ? Math.round(8000 * Math.sin(this.phase)) : 0;
      this.phase += (2 * Math.PI * this.freq) / 8000;
    }
    this.send(8, this.ts, Buffer.from(alawmulaw.alaw.encode(pcm)), false);
  }

  private send(pt: number, ts: number, payload: Buffer, marker: boolean): void {
    const b = Buffer.alloc(12 + payload.length);
    b[0] = 0x80;
    b[1] = (marker ? 0x80 : 0) | pt;
    b.writeUInt16BE(this.seq++ & 0xffff, 2);
    b.writeUInt32BE(ts >>> 0, 4);
    b.writeUInt32BE(this.ssrc >>> 0, 8);
    payload.copy(b, 12);
    this.sock?.send(b, this.remote!.port, this.remote!.address);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    const s = this.sock;
    this.sock = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
    await sleep(0);
  }
}
