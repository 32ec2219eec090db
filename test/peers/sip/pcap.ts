import { writeFileSync } from 'node:fs';
import alawmulaw from 'alawmulaw';

/**
 * A minimal pcap writer (libpcap format, Ethernet/IPv4/UDP) for sipp's play_pcap_audio: sipp
 * reads the UDP payloads and their timing and sends them to the media address from our SDP.
 */
export interface PcapPacket {
  /** Capture time in microseconds from the start. */
  tsUs: number;
  payload: Buffer;
}

function ipChecksum(h: Buffer): number {
  let s = 0;
  for (let i = 0; i < h.length; i += 2) s += h.readUInt16BE(i);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return ~s & 0xffff;
}

export function writePcap(path: string, packets: PcapPacket[], srcPort = 6000, dstPort = 7000): void {
  const global = Buffer.alloc(24);
  global.writeUInt32LE(0xa1b2c3d4, 0);
  global.writeUInt16LE(2, 4);
  global.writeUInt16LE(4, 6);
  global.writeUInt32LE(65535, 16);
  global.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  const parts: Buffer[] = [global];
  const base = 1_700_000_000;
  for (const p of packets) {
    const udpLen = 8 + p.payload.length;
    const ipLen = 20 + udpLen;
    const frame = Buffer.alloc(14 + ipLen);
    frame.writeUInt16BE(0x0800, 12); // IPv4 ethertype (MACs left zero)
    const ip = frame.subarray(14, 34);
    ip[0] = 0x45;
    ip.writeUInt16BE(ipLen, 2);
    ip[8] = 64;
    ip[9] = 17; // UDP
    Buffer.from([127, 0, 0, 1]).copy(ip, 12);
    Buffer.from([127, 0, 0, 1]).copy(ip, 16);
    ip.writeUInt16BE(ipChecksum(ip), 10);
    frame.writeUInt16BE(srcPort, 34);
    frame.writeUInt16BE(dstPort, 36);
    frame.writeUInt16BE(udpLen, 38);
    p.payload.copy(frame, 42);
    const rec = Buffer.alloc(16);
    const sec = base + Math.floor(p.tsUs / 1e6);
    rec.writeUInt32LE(sec, 0);
    rec.writeUInt32LE(Math.floor(p.tsUs % 1e6), 4);
    rec.writeUInt32LE(frame.length, 8);
    rec.writeUInt32LE(frame.length, 12);
    parts.push(rec, frame);
  }
  writeFileSync(path, Buffer.concat(parts));
}

function rtp(pt: number, seq: number, ts: number, marker: boolean, payload: Buffer): Buffer {
  const b = Buffer.alloc(12 + payload.length);
  b[0] = 0x80;
  b[1] = (marker ? 0x80 : 0) | pt;
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE(ts >>> 0, 4);
  b.writeUInt32BE(0x5eed1234, 8);
  payload.copy(b, 12);
  return b;
}

/** `ptimeMs` (default 20) G.711 packets of a continuous sine (`codec` PCMA pt 8 or PCMU pt 0). */
export function toneRtp(
  codec: 'PCMA' | 'PCMU',
  freq: number,
  ms: number,
  amplitude = 8000,
  ptimeMs = 20,
): PcapPacket[] {
  const pt = codec === 'PCMA' ? 8 : 0;
  const per = ptimeMs * 8;
  const n = Math.floor(ms / ptimeMs);
  const out: PcapPacket[] = [];
  for (let f = 0; f < n; f++) {
    const pcm = new Int16Array(per);
    for (let i = 0; i < per; i++)
      pcm[i] = Math.round(amplitude * Math.sin((2 * Math.PI * freq * (f * per + i)) / 8000));
    const enc = codec === 'PCMA' ? alawmulaw.alaw.encode(pcm) : alawmulaw.mulaw.encode(pcm);
    out.push({ tsUs: f * ptimeMs * 1000, payload: rtp(pt, 1000 + f, 160_000 + f * per, f === 0, Buffer.from(enc)) });
  }
  return out;
}

/**
 * Tone, then an RFC 4733 event for `digit` (pt 101: 5 progress packets, 3 end packets, all with
 * the event's start timestamp, as real phones send it), then tone again.
 */
export function toneWithDtmf(codec: 'PCMA' | 'PCMU', freq: number, digit: string, ms: number): PcapPacket[] {
  const audio = toneRtp(codec, freq, ms);
  const at = Math.floor(audio.length / 2);
  const event = '0123456789*#ABCD'.indexOf(digit);
  const out: PcapPacket[] = [];
  let seq = 1000;
  const startTs = 160_000 + at * 160;
  for (let f = 0; f < audio.length; f++) {
    const orig = audio[f]!.payload;
    if (f >= at && f < at + 8) {
      const k = f - at;
      const end = k >= 5;
      const dur = Math.min(k + 1, 5) * 160;
      const p = Buffer.from([event, (end ? 0x80 : 0) | 10, dur >> 8, dur & 0xff]);
      out.push({ tsUs: f * 20_000, payload: rtp(101, seq++, startTs, k === 0, p) });
    } else {
      const b = Buffer.from(orig);
      b.writeUInt16BE(seq++ & 0xffff, 2);
      out.push({ tsUs: f * 20_000, payload: b });
    }
  }
  return out;
}
