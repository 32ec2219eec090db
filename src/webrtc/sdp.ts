import { parse, write, type MediaAttributes, type SessionDescription } from 'sdp-transform';
import { GatewayError } from '../core/errors.js';

/**
 * WhatsApp's media rules applied to SDP, each a reported cause of calls dropping at ~20 s:
 * Opus (+ telephone-event) only, a sha-256 DTLS fingerprint only, and ICE candidates the far end
 * can reach. werift writes a correct answer today; these checks keep it that way across upgrades.
 */

/** Codecs WhatsApp carries; anything else in our SDP would negotiate no usable media. */
const ALLOWED_CODECS = new Set(['opus', 'telephone-event']);

export interface OfferInfo {
  opusPt: number;
  telephoneEventPt: number | undefined;
  /** The telephone-event payload's RTP clock (WhatsApp offers 8000; browsers also offer 48000). */
  telephoneEventRate: number | undefined;
  setup: string | undefined;
  candidates: number;
  /** The audio stream's direction (RFC 3264 §6); `recvonly` from a listen-in browser. */
  direction: string;
}

function audioSection(sdp: SessionDescription, callId?: string): MediaAttributes {
  const audio = sdp.media.find((m) => m.type === 'audio');
  if (!audio) throw new GatewayError('unknown_codec', 'SDP has no audio section', callId);
  return audio;
}

/**
 * The telephone-event format we use: the one at Opus's 48 kHz clock when offered (as libwebrtc
 * chooses, so events and audio share one clock), else the first offered (WhatsApp: 8000).
 */
function telephoneEventOf(m: MediaAttributes): { payload: number; rate: number } | undefined {
  const events = m.rtp.filter((r) => r.codec.toLowerCase() === 'telephone-event' && r.rate !== undefined);
  const pick = events.find((r) => r.rate === 48000) ?? events[0];
  return pick ? { payload: pick.payload, rate: pick.rate! } : undefined;
}

/** Checks a remote offer (or answer) carries Opus 48 kHz; returns what we negotiate from it. */
export function inspectRemoteSdp(raw: string, callId?: string): OfferInfo {
  let sdp: SessionDescription;
  try {
    sdp = parse(raw);
  } catch (err) {
    throw new GatewayError('bad_frame', `unparseable SDP: ${(err as Error).message}`, callId);
  }
  const audio = audioSection(sdp, callId);
  const opus = audio.rtp.find((r) => r.codec.toLowerCase() === 'opus' && r.rate === 48000);
  if (!opus) {
    const offered = audio.rtp.map((r) => `${r.codec}/${r.rate}`).join(', ') || 'none';
    throw new GatewayError('unknown_codec', `SDP offers no Opus/48000 (offered: ${offered})`, callId);
  }
  const te = telephoneEventOf(audio);
  return {
    opusPt: opus.payload,
    telephoneEventPt: te?.payload,
    telephoneEventRate: te?.rate,
    setup: audio.setup ?? sdp.setup,
    candidates: audio.candidates?.length ?? 0,
    direction: audio.direction ?? sdp.direction ?? 'sendrecv',
  };
}

/**
 * Shapes our own SDP (answer or offer) for WhatsApp: drops every codec but Opus and
 * telephone-event, keeps only sha-256 fingerprints, requires at least one UDP candidate, and puts
 * the first candidate in the m=/c= lines (the RFC 8839 default candidate) instead of werift's
 * `9 / 0.0.0.0` placeholder, for peers that look there.
 */
export function shapeLocalSdp(raw: string, callId?: string): string {
  const sdp = parse(raw);
  // Fingerprints may sit at session or media level; only sha-256 may remain anywhere.
  const sha256 = [sdp.fingerprint, ...sdp.media.map((m) => m.fingerprint)].find(
    (f) => f?.type.toLowerCase() === 'sha-256',
  );
  if (!sha256) throw new GatewayError('invalid_state', 'our SDP has no sha-256 DTLS fingerprint', callId);
  for (const m of sdp.media) {
    if (m.type !== 'audio') continue;
    const keep = new Set(m.rtp.filter((r) => ALLOWED_CODECS.has(r.codec.toLowerCase())).map((r) => r.payload));
    if (![...keep].some((pt) => m.rtp.find((r) => r.payload === pt)?.codec.toLowerCase() === 'opus')) {
      throw new GatewayError('unknown_codec', 'our SDP lost Opus: refusing to send it to WhatsApp', callId);
    }
    m.rtp = m.rtp.filter((r) => keep.has(r.payload));
    m.fmtp = m.fmtp.filter((f) => keep.has(f.payload));
    if (m.rtcpFb) m.rtcpFb = m.rtcpFb.filter((f) => keep.has(Number(f.payload)));
    m.payloads = [...keep].join(' ');
    const udp = (m.candidates ?? []).filter((c) => c.transport.toLowerCase() === 'udp');
    if (udp.length === 0) throw new GatewayError('invalid_state', 'our SDP has no UDP ICE candidate', callId);
    m.candidates = udp;
    m.port = udp[0]!.port;
    m.connection = { version: udp[0]!.ip.includes(':') ? 6 : 4, ip: udp[0]!.ip };
  }
  sdp.fingerprint = undefined;
  for (const m of sdp.media) m.fingerprint = { type: 'sha-256', hash: sha256.hash };
  // sdp-transform keeps unknown lines in `invalid`; a second fingerprint could hide there.
  for (const m of sdp.media) {
    if (m.invalid) m.invalid = m.invalid.filter((l) => !/^fingerprint:/i.test(l.value));
  }
  return write(sdp);
}

/** What a shaped SDP carries, for logs and the Graph stand-in's checks. */
export function describeSdp(raw: string): {
  codecs: string[];
  fingerprints: string[];
  candidates: { ip: string; port: number; type: string }[];
  setup: string | undefined;
} {
  const sdp = parse(raw);
  const audio = sdp.media.find((m) => m.type === 'audio');
  const fingerprintLines = raw.split(/\r?\n/).filter((l) => l.startsWith('a=fingerprint:'));
  return {
    codecs: (audio?.rtp ?? []).map((r) => `${r.codec}/${r.rate}${r.encoding ? `/${r.encoding}` : ''}`),
    fingerprints: fingerprintLines.map((l) => l.slice('a=fingerprint:'.length).split(' ')[0]!.toLowerCase()),
    candidates: (audio?.candidates ?? []).map((c) => ({ ip: c.ip, port: c.port, type: c.type })),
    setup: audio?.setup ?? sdp.setup,
  };
}
