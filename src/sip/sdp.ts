import { parse, write, type SessionDescription } from 'sdp-transform';
import { PCMA_8K, PCMU_8K, type AudioFormat } from '../core/audio/format.js';

export type Direction = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
export type G711 = 'PCMU' | 'PCMA';

/** What we take from a carrier's audio offer. */
export interface AudioOffer {
  address: string;
  port: number;
  rtcpPort: number;
  codec: G711;
  payloadType: number;
  /** telephone-event payload type, when offered and the trunk allows it. */
  dtmfPayloadType: number | undefined;
  direction: Direction;
}

export type OfferResult = { ok: true; offer: AudioOffer } | { ok: false; status: number; reason: string };

const STATIC: Record<number, G711> = { 0: 'PCMU', 8: 'PCMA' };

export const formatOf = (codec: G711): AudioFormat => (codec === 'PCMA' ? PCMA_8K : PCMU_8K);

/**
 * Pick what we bridge from an offer: the first codec in the offer's order that the trunk allows
 * (the offerer's preference wins, RFC 3264 §6.1), plus telephone-event/8000 when offered.
 */
export function readOffer(sdp: string, allowed: readonly G711[], telephoneEvent: boolean): OfferResult {
  let s: SessionDescription;
  try {
    s = parse(sdp);
  } catch {
    return { ok: false, status: 400, reason: 'Bad Request (unparseable SDP)' };
  }
  const m = s.media?.find((x) => x.type === 'audio' && x.port !== 0);
  if (!m) return { ok: false, status: 488, reason: 'Not Acceptable Here (no audio stream)' };
  if (!/^RTP\/AVP$/i.test(m.protocol))
    return { ok: false, status: 488, reason: `Not Acceptable Here (${m.protocol} not supported)` };
  const address = m.connection?.ip ?? s.connection?.ip;
  if (!address) return { ok: false, status: 400, reason: 'Bad Request (SDP without c= line)' };
  const pts = String(m.payloads ?? '')
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
  const nameOf = (pt: number): string | undefined => {
    const r = m.rtp.find((x) => x.payload === pt);
    if (r) return `${r.codec.toUpperCase()}/${r.rate ?? 8000}`;
    return STATIC[pt] ? `${STATIC[pt]}/8000` : undefined;
  };
  let chosen: { codec: G711; pt: number } | undefined;
  for (const pt of pts) {
    const n = nameOf(pt);
    const codec = n === 'PCMU/8000' ? 'PCMU' : n === 'PCMA/8000' ? 'PCMA' : undefined;
    if (codec && allowed.includes(codec)) {
      chosen = { codec, pt };
      break;
    }
  }
  if (!chosen)
    return { ok: false, status: 488, reason: `Not Acceptable Here (no common codec; we take ${allowed.join(', ')})` };
  const te = telephoneEvent ? pts.find((pt) => nameOf(pt) === 'TELEPHONE-EVENT/8000') : undefined;
  const direction = (m.direction ?? s.direction ?? 'sendrecv') as Direction;
  return {
    ok: true,
    offer: {
      address,
      port: m.port,
      rtcpPort: m.rtcp?.port ?? m.port + 1,
      codec: chosen.codec,
      payloadType: chosen.pt,
      dtmfPayloadType: te,
      direction,
    },
  };
}

/** Our answer to a peer's direction (RFC 3264 §6.1): hold (sendonly) → recvonly, inactive → inactive. */
export function answerDirection(offered: Direction): Direction {
  switch (offered) {
    case 'sendonly':
      return 'recvonly';
    case 'recvonly':
      return 'sendonly';
    case 'inactive':
      return 'inactive';
    default:
      return 'sendrecv';
  }
}

export interface AnswerParams {
  address: string;
  port: number;
  sessionId: number;
  version: number;
  codec: G711;
  payloadType: number;
  dtmfPayloadType: number | undefined;
  direction: Direction;
}

/** One audio-only RTP/AVP description: what both our answers and our offers are. */
export interface AudioSdpParams {
  address: string;
  port: number;
  sessionId: number;
  version: number;
  /** Codecs with their payload types, in preference order. */
  codecs: readonly { codec: string; payloadType: number }[];
  dtmfPayloadType: number | undefined;
  direction: Direction;
}

export function buildAudioSdp(p: AudioSdpParams): string {
  const rtp = p.codecs.map((c) => ({ payload: c.payloadType, codec: c.codec, rate: 8000 }));
  const fmtp: { payload: number; config: string }[] = [];
  if (p.dtmfPayloadType !== undefined) {
    rtp.push({ payload: p.dtmfPayloadType, codec: 'telephone-event', rate: 8000 });
    fmtp.push({ payload: p.dtmfPayloadType, config: '0-16' });
  }
  const desc: SessionDescription = {
    version: 0,
    origin: {
      username: '-',
      sessionId: p.sessionId,
      sessionVersion: p.version,
      netType: 'IN',
      ipVer: 4,
      address: p.address,
    },
    name: 'voice-gateway',
    connection: { version: 4, ip: p.address },
    timing: { start: 0, stop: 0 },
    media: [
      {
        type: 'audio',
        port: p.port,
        protocol: 'RTP/AVP',
        payloads: rtp.map((r) => r.payload).join(' '),
        rtp,
        fmtp,
        ptime: 20,
        rtcp: { port: p.port + 1 },
        direction: p.direction,
      },
    ],
  };
  return write(desc);
}

/** Our answer: the one codec we chose from the offer (+ telephone-event when offered). */
export function buildAnswer(p: AnswerParams): string {
  return buildAudioSdp({ ...p, codecs: [{ codec: p.codec, payloadType: p.payloadType }] });
}
