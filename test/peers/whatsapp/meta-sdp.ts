/**
 * What "Meta" checks in the SDP a business sends (pre_accept / accept answers, connect offers),
 * written from the public texts and NOT from the gateway's SDP code (src/webrtc/sdp.ts): no
 * sdp-transform, the raw text is read line by line. Sources: RFC 8866 (SDP grammar, line order,
 * CRLF), RFC 3264 (an answer only uses what the offer offered, same payload numbers, same m-lines),
 * RFC 8839 (ice-ufrag/ice-pwd lengths, candidate grammar), RFC 8122 + Meta's calling docs (a
 * sha-256 fingerprint only), RFC 5763 (setup roles), RFC 5761 (rtcp-mux), RFC 8843 (BUNDLE mids),
 * RFC 7587 (opus/48000/2) and Meta's "audio only, Opus + telephone-event" media rules.
 * Each problem is a sentence Meta's `error_data.details` could carry.
 */

interface MediaSection {
  kind: string;
  port: number;
  proto: string;
  formats: string[];
  attrs: string[];
  connection: string | undefined;
}

interface Parsed {
  session: string[];
  sessionConnection: string | undefined;
  media: MediaSection[];
}

/** RFC 8866 order of the session-level lines that must appear (v, o, s, then t before any m). */
const SESSION_ORDER = ['v', 'o', 's'];
const ICE_CHARS = /^[A-Za-z0-9+/]+$/;

function split(sdp: string, problems: string[]): Parsed | undefined {
  if (!sdp.endsWith('\r\n')) problems.push('SDP must end with CRLF');
  const lines = sdp.split('\r\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.some((l) => l.includes('\n') || l.includes('\r'))) problems.push('SDP lines must end with CRLF (RFC 8866)');
  const out: Parsed = { session: [], sessionConnection: undefined, media: [] };
  let sawT = false;
  for (const [i, line] of lines.entries()) {
    const type = line[0];
    if (!/^[a-z]=/.test(line)) {
      problems.push(`line ${i + 1} is not <type>=<value>: ${line.slice(0, 30)}`);
      continue;
    }
    const value = line.slice(2);
    if (i < SESSION_ORDER.length && type !== SESSION_ORDER[i]) {
      problems.push(`line ${i + 1} must be ${SESSION_ORDER[i]}= (RFC 8866 order)`);
      return undefined;
    }
    if (type === 't') sawT = true;
    if (type === 'm') {
      if (!sawT) problems.push('m= before t= (RFC 8866 order)');
      const [kind = '', port = '', proto = '', ...formats] = value.split(' ');
      out.media.push({ kind, port: Number(port), proto, formats, attrs: [], connection: undefined });
      continue;
    }
    const m = out.media[out.media.length - 1];
    if (type === 'c') {
      if (m) m.connection = value;
      else out.sessionConnection = value;
    } else if (type === 'a') {
      (m ? m.attrs : out.session).push(value);
    } else if (!m) {
      out.session.push(`${type}=${value}`);
    }
  }
  if (out.session[0] !== 'v=0') problems.push('v= must be 0');
  const origin =
    out.session
      .find((l) => l.startsWith('o='))
      ?.slice(2)
      .split(' ') ?? [];
  if (origin.length !== 6 || origin[3] !== 'IN' || !['IP4', 'IP6'].includes(origin[4] ?? ''))
    problems.push('o= must be "<user> <sess-id> <version> IN IP4|IP6 <address>"');
  if (!sawT) problems.push('no t= line');
  return out;
}

/** `a=<name>:<value>` values of one attribute (media level first, then session level). */
const attr = (m: MediaSection, session: string[], name: string): string[] => {
  const pick = (list: string[]) =>
    list.filter((a) => a === name || a.startsWith(`${name}:`)).map((a) => a.slice(name.length + 1));
  const own = pick(m.attrs);
  return own.length ? own : pick(session);
};

/** payload type → "codec/rate[/channels]" (lower-case codec) from the a=rtpmap lines. */
function rtpmaps(m: MediaSection): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of m.attrs) {
    const hit = /^rtpmap:(\d+) ([^/\s]+)\/(\d+)(?:\/(\d+))?$/.exec(a);
    if (hit) out.set(hit[1]!, `${hit[2]!.toLowerCase()}/${hit[3]}${hit[4] ? `/${hit[4]}` : ''}`);
  }
  return out;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function candidateProblems(value: string): string[] {
  // RFC 8839 §5.1: foundation component transport priority address port "typ" type [raddr x rport y] *(ext)
  const f = value.split(' ');
  const [foundation, component, transport, priority, address, port, typ, type] = f;
  const out: string[] = [];
  const where = `candidate ${value.slice(0, 40)}`;
  if (!foundation || !/^[A-Za-z0-9+/]{1,32}$/.test(foundation)) out.push(`${where}: bad foundation`);
  if (!/^\d{1,3}$/.test(component ?? '')) out.push(`${where}: bad component`);
  if (!/^\d{1,10}$/.test(priority ?? '') || Number(priority) > 2 ** 31 - 1) out.push(`${where}: bad priority`);
  const p = Number(port);
  if (!Number.isInteger(p) || p < 1 || p > 65535) out.push(`${where}: bad port`);
  if (typ !== 'typ' || !['host', 'srflx', 'prflx', 'relay'].includes(type ?? '')) out.push(`${where}: bad typ`);
  if (transport?.toUpperCase() === 'UDP') {
    const v4 = IPV4.exec(address ?? '');
    if (address?.endsWith('.local')) out.push(`${where}: mDNS name Meta cannot resolve`);
    else if (v4 && v4.slice(1).some((o) => Number(o) > 255)) out.push(`${where}: bad IPv4 address`);
    else if (!v4 && !address?.includes(':')) out.push(`${where}: address is neither IPv4 nor IPv6`);
    else if (address === '0.0.0.0' || address === '::') out.push(`${where}: unspecified address`);
  }
  if ((type === 'srflx' || type === 'relay' || type === 'prflx') && (f[8] !== 'raddr' || f[10] !== 'rport'))
    out.push(`${where}: ${type} without raddr/rport`);
  return out;
}

/**
 * Problems Meta would report for `sdp` sent as `role`; for an answer, `offer` (the SDP Meta sent in
 * the connect webhook) adds the RFC 3264 answer-to-offer checks.
 */
export function metaSdpProblems(sdp: unknown, role: 'offer' | 'answer', offer?: string): string[] {
  if (typeof sdp !== 'string' || sdp.length === 0) return ['session.sdp is missing'];
  const problems: string[] = [];
  const parsed = split(sdp, problems);
  if (!parsed) return problems;
  const audio = parsed.media.filter((m) => m.kind === 'audio');
  const others = parsed.media.filter((m) => m.kind !== 'audio');
  if (others.length) problems.push(`audio only: found m=${others.map((m) => m.kind).join(', m=')}`);
  if (audio.length !== 1) problems.push(`exactly one m=audio expected, found ${audio.length}`);
  const m = audio[0];
  if (!m) return problems;

  if (m.proto !== 'UDP/TLS/RTP/SAVPF') problems.push(`m=audio transport must be UDP/TLS/RTP/SAVPF, not ${m.proto}`);
  if (!(m.port > 0 && m.port < 65536)) problems.push(`m=audio port ${m.port} (0 rejects the stream)`);
  if (!m.connection && !parsed.sessionConnection) problems.push('no c= line');

  // Codecs: every listed format mapped; Opus 48000/2 present; nothing but Opus and telephone-event.
  const maps = rtpmaps(m);
  for (const pt of m.formats) {
    const codec = maps.get(pt);
    if (!codec) problems.push(`payload ${pt} on the m= line has no a=rtpmap`);
    else if (!codec.startsWith('opus/') && !codec.startsWith('telephone-event/'))
      problems.push(`codec ${codec} is not allowed (Opus and telephone-event only)`);
  }
  for (const pt of maps.keys()) if (!m.formats.includes(pt)) problems.push(`a=rtpmap:${pt} not on the m= line`);
  const opus = [...maps.entries()].filter(([pt, c]) => c.startsWith('opus/') && m.formats.includes(pt));
  if (opus.length === 0) problems.push('no Opus payload');
  for (const [pt, c] of opus) if (c !== 'opus/48000/2') problems.push(`payload ${pt} is ${c}, must be opus/48000/2`);
  for (const [pt, c] of maps)
    if (c.startsWith('telephone-event/') && c !== 'telephone-event/8000')
      problems.push(`payload ${pt} is ${c}; WhatsApp uses telephone-event/8000`);

  // ICE credentials and candidates.
  const ufrag = attr(m, parsed.session, 'ice-ufrag');
  const pwd = attr(m, parsed.session, 'ice-pwd');
  if (ufrag.length !== 1 || !ICE_CHARS.test(ufrag[0]!) || ufrag[0]!.length < 4 || ufrag[0]!.length > 256)
    problems.push('a=ice-ufrag must be one 4-256 ice-char value');
  if (pwd.length !== 1 || !ICE_CHARS.test(pwd[0]!) || pwd[0]!.length < 22 || pwd[0]!.length > 256)
    problems.push('a=ice-pwd must be one 22-256 ice-char value');
  const candidates = m.attrs.filter((a) => a.startsWith('candidate:')).map((a) => a.slice('candidate:'.length));
  for (const c of candidates) problems.push(...candidateProblems(c));
  const usable = candidates.filter(
    (c) => c.split(' ')[2]?.toUpperCase() === 'UDP' && candidateProblems(c).length === 0,
  );
  if (usable.length === 0) problems.push('no usable UDP ICE candidate (Meta must reach us)');

  // DTLS: sha-256 only, well formed; setup role by offer/answer.
  const fps = [...parsed.session, ...m.attrs].filter((a) => a.startsWith('fingerprint:'));
  if (fps.length === 0) problems.push('no a=fingerprint');
  for (const fp of fps) {
    const [hash, value = ''] = fp.slice('fingerprint:'.length).split(' ');
    if (hash?.toLowerCase() !== 'sha-256') problems.push(`fingerprint hash ${hash} not accepted (sha-256 only)`);
    else if (!/^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$/.test(value))
      problems.push('sha-256 fingerprint is not 32 hex bytes');
  }
  const setup = attr(m, parsed.session, 'setup');
  const wanted = role === 'offer' ? ['actpass'] : ['active', 'passive'];
  if (setup.length !== 1 || !wanted.includes(setup[0]!))
    problems.push(`a=setup must be ${wanted.join(' or ')} in an ${role}, got ${setup.join(',') || 'none'}`);
  if (!m.attrs.includes('rtcp-mux')) problems.push('no a=rtcp-mux');
  const dir = m.attrs.find((a) => ['sendrecv', 'sendonly', 'recvonly', 'inactive'].includes(a)) ?? 'sendrecv';
  if (dir !== 'sendrecv') problems.push(`audio direction ${dir}: a call is sendrecv`);

  // BUNDLE: every mid named by the group exists.
  const mid = attr(m, [], 'mid')[0];
  const bundle = parsed.session.find((a) => a.startsWith('group:BUNDLE'));
  if (bundle)
    for (const tag of bundle.split(' ').slice(1)) if (tag !== mid) problems.push(`BUNDLE names unknown mid ${tag}`);

  if (role === 'answer' && offer) problems.push(...answerVsOffer(m, mid, offer));
  return problems;
}

/** RFC 3264 §6: the answer uses only offered codecs, with the offer's payload numbers and mid. */
function answerVsOffer(answer: MediaSection, answerMid: string | undefined, offerSdp: string): string[] {
  const ignored: string[] = [];
  const offer = split(offerSdp, ignored)?.media.find((x) => x.kind === 'audio');
  if (!offer) return [];
  const out: string[] = [];
  const offered = rtpmaps(offer);
  const answered = rtpmaps(answer);
  for (const pt of answer.formats) {
    const mine = answered.get(pt);
    const theirs = offered.get(pt);
    if (!theirs) out.push(`answer payload ${pt} (${mine}) was not offered`);
    else if (mine && mine !== theirs) out.push(`answer maps payload ${pt} to ${mine}, the offer to ${theirs}`);
  }
  const offerMid = attr(offer, [], 'mid')[0];
  if (offerMid !== answerMid) out.push(`answer mid ${answerMid} does not match the offer's ${offerMid}`);
  return out;
}
