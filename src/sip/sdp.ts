import { isIP } from 'node:net';
import { parse, write, type SessionDescription } from 'sdp-transform';
import { PCMA_8K, PCMU_8K, type AudioFormat } from '../core/audio/format.js';

export type Direction = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
export type G711 = 'PCMU' | 'PCMA';

/** One m-line of an offer, as much as an answer needs to mirror (or refuse) it. */
export interface OfferedStream {
  type: string;
  protocol: string;
  payloads: string;
}

/** What we take from a carrier's audio offer. */
export interface AudioOffer {
  address: string;
  port: number;
  /** Where the peer wants RTCP; may be above 65535 (RTP on 65535): the leg then sends no RTCP. */
  rtcpPort: number;
  codec: G711;
  payloadType: number;
  /** telephone-event payload type, when offered and the trunk allows it. */
  dtmfPayloadType: number | undefined;
  direction: Direction;
  /** RFC 3389 comfort noise payload type, when offered (static 13 or a dynamic CN/8000). */
  cnPayloadType?: number;
  /** a=ptime / a=maxptime (ms), when the peer stated them. */
  ptime?: number;
  maxptime?: number;
  /** IP version of the media address (IN IP4 / IN IP6). */
  family?: 4 | 6;
  /** c=0.0.0.0: RFC 2543 hold ("do not send to me"); `direction` already says we must not send. */
  nullAddress?: boolean;
  /** Every m-line of the offer in order, and the index of the one we took (RFC 3264 §6). */
  streams?: OfferedStream[];
  mediaIndex?: number;
}

export type OfferResult = { ok: true; offer: AudioOffer } | { ok: false; status: number; reason: string };
type StreamResult =
  { ok: true; offer: Omit<AudioOffer, 'streams' | 'mediaIndex'> } | Extract<OfferResult, { ok: false }>;

const STATIC: Record<number, string> = { 0: 'PCMU/8000', 8: 'PCMA/8000', 13: 'CN/8000' };

export const formatOf = (codec: G711): AudioFormat => (codec === 'PCMA' ? PCMA_8K : PCMU_8K);

const validPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;

/** RFC 2543 hold / "no address yet": an address nothing may be sent to. */
export const isNullAddress = (a: string): boolean => a === '0.0.0.0' || /^[0:]+$/.test(a);

/**
 * Pick what we bridge from an offer: the first audio m-line we can use (RTP/AVP with a codec the
 * trunk allows); in it the first codec in the offer's order (the offerer's preference wins,
 * RFC 3264 §6.1), plus telephone-event/8000 and CN when offered. The other m-lines are kept so the
 * answer can refuse them in place (port 0). `families`: the IP versions we have media sockets for.
 */
export function readOffer(
  sdp: string,
  allowed: readonly G711[],
  telephoneEvent: boolean,
  families: readonly (4 | 6)[] = [4],
): OfferResult {
  let s: SessionDescription;
  try {
    s = parse(sdp);
  } catch {
    return { ok: false, status: 400, reason: 'Bad Request (unparseable SDP)' };
  }
  const media = s.media ?? [];
  const streams = media.map((m) => ({ type: m.type, protocol: m.protocol, payloads: String(m.payloads ?? '') }));
  let refusal: StreamResult | undefined;
  for (const [i, m] of media.entries()) {
    if (m.type !== 'audio' || m.port === 0) continue;
    const r = readAudioStream(s, m, allowed, telephoneEvent, families);
    if (r.ok) return { ok: true, offer: { ...r.offer, streams, mediaIndex: i } };
    refusal ??= r;
  }
  return refusal ?? { ok: false, status: 488, reason: 'Not Acceptable Here (no audio stream)' };
}

function readAudioStream(
  s: SessionDescription,
  m: SessionDescription['media'][number],
  allowed: readonly G711[],
  telephoneEvent: boolean,
  families: readonly (4 | 6)[],
): StreamResult {
  if (!/^RTP\/AVP$/i.test(m.protocol))
    return { ok: false, status: 488, reason: `Not Acceptable Here (${m.protocol} not supported)` };
  if (!validPort(m.port))
    return { ok: false, status: 488, reason: `Not Acceptable Here (RTP port ${m.port} out of range)` };
  if (m.rtcp && !validPort(m.rtcp.port))
    return { ok: false, status: 488, reason: `Not Acceptable Here (a=rtcp port ${m.rtcp.port} out of range)` };
  const connection = m.connection ?? s.connection;
  if (!connection?.ip) return { ok: false, status: 400, reason: 'Bad Request (SDP without c= line)' };
  const family = isIP(connection.ip);
  if ((family !== 4 && family !== 6) || family !== connection.version)
    return {
      ok: false,
      status: 488,
      reason: `Not Acceptable Here (media address ${connection.ip} is not an IP address)`,
    };
  if (!families.includes(family))
    return { ok: false, status: 488, reason: `Not Acceptable Here (IPv${family} media not available)` };
  const pts = String(m.payloads ?? '')
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
  const nameOf = (pt: number): string | undefined => {
    const r = m.rtp.find((x) => x.payload === pt);
    if (r) return `${r.codec.toUpperCase()}/${r.rate ?? 8000}`;
    return STATIC[pt];
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
  const cn = pts.find((pt) => nameOf(pt) === 'CN/8000');
  let direction = (m.direction ?? s.direction ?? 'sendrecv') as Direction;
  const nullAddress = isNullAddress(connection.ip);
  // RFC 3264 §8.4: c=0.0.0.0 is the old way to say "do not send to me" (hold).
  if (nullAddress)
    direction = direction === 'sendrecv' ? 'sendonly' : direction === 'recvonly' ? 'inactive' : direction;
  const ms = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined);
  return {
    ok: true,
    offer: {
      address: connection.ip,
      port: m.port,
      rtcpPort: m.rtcp?.port ?? m.port + 1,
      codec: chosen.codec,
      payloadType: chosen.pt,
      dtmfPayloadType: te,
      cnPayloadType: cn,
      direction,
      ptime: ms(m.ptime),
      maxptime: ms(m.maxptime),
      family,
      nullAddress,
    },
  };
}

/** Packet durations we can send (multiples of 10 ms up to 60 ms of G.711). */
const SENDABLE_PTIMES = [10, 20, 30, 40, 50, 60];

/**
 * The packetisation we send at: the peer's a=ptime when we can do it and it respects its own
 * a=maxptime, otherwise 20 ms (10 ms if its maxptime is below 20).
 */
export function sendPtime(offer: Pick<AudioOffer, 'ptime' | 'maxptime'>): number {
  const { ptime, maxptime } = offer;
  if (ptime !== undefined && SENDABLE_PTIMES.includes(ptime) && (maxptime === undefined || ptime <= maxptime))
    return ptime;
  return maxptime !== undefined && maxptime < 20 && maxptime >= 10 ? 10 : 20;
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
  /** CN payload type (RFC 3389); in an answer, only when the offer had one. */
  cnPayloadType?: number;
  /** The a=ptime we send at (default 20). */
  ptime?: number;
  /** In an answer, the offer's m-lines: ours goes at `mediaIndex`, every other one is refused with port 0. */
  streams?: OfferedStream[];
  mediaIndex?: number;
}

/** Our answer's description: the one codec we chose from the offer. */
export interface AnswerParams extends Omit<AudioSdpParams, 'codecs'> {
  codec: G711;
  payloadType: number;
}

export function buildAudioSdp(p: AudioSdpParams): string {
  const rtp = p.codecs.map((c) => ({ payload: c.payloadType, codec: c.codec, rate: 8000 }));
  const ipVersion = isIP(p.address) === 6 ? 6 : 4;
  if (p.cnPayloadType !== undefined) rtp.push({ payload: p.cnPayloadType, codec: 'CN', rate: 8000 });
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
      ipVer: ipVersion,
      address: p.address,
    },
    name: 'voice-gateway',
    connection: { version: ipVersion, ip: p.address },
    timing: { start: 0, stop: 0 },
    media: [],
  };
  const audio: SessionDescription['media'][number] = {
    type: 'audio',
    port: p.port,
    protocol: 'RTP/AVP',
    payloads: rtp.map((r) => r.payload).join(' '),
    rtp,
    fmtp,
    ptime: p.ptime ?? 20,
    rtcp: { port: p.port + 1 },
    direction: p.direction,
  };
  // RFC 3264 §6: as many m-lines as the offer, in its order; the ones we do not take get port 0.
  const streams = p.streams ?? [{ type: 'audio', protocol: 'RTP/AVP', payloads: '' }];
  const index = p.streams ? (p.mediaIndex ?? 0) : 0;
  desc.media = streams.map((st, i) =>
    i === index
      ? audio
      : { type: st.type, port: 0, protocol: st.protocol, payloads: st.payloads || '0', rtp: [], fmtp: [] },
  );
  return write(desc);
}

/** Our answer: the one codec we chose from the offer (+ telephone-event when offered). */
export function buildAnswer(p: AnswerParams): string {
  return buildAudioSdp({ ...p, codecs: [{ codec: p.codec, payloadType: p.payloadType }] });
}

/** What of our answer follows the offer beyond the codec: ptime, CN, and its m-lines (RFC 3264 §6). */
export function answerShape(offer: AudioOffer): Partial<AnswerParams> {
  return {
    ptime: sendPtime(offer),
    cnPayloadType: offer.cnPayloadType,
    streams: offer.streams,
    mediaIndex: offer.mediaIndex,
  };
}
