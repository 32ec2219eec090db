import { randomBytes } from 'node:crypto';

/**
 * SIP message parsing and serialisation (RFC 3261 §7). Hand-written rather than taken from npm:
 * `sip` (0.0.6) is unmaintained and throws on odd input, sip.js's core is built around a
 * WebSocket user agent, and drachtio-srf's parser is internal to its wire protocol. What we need
 * is small: a start line, headers (compact forms folded to full names), a body, and a parser that
 * returns a reason instead of throwing on garbage.
 */

export interface SipRequest {
  kind: 'request';
  method: string;
  uri: string;
  headers: SipHeaders;
  body: string;
}

export interface SipResponse {
  kind: 'response';
  status: number;
  reason: string;
  headers: SipHeaders;
  body: string;
}

export type SipMessage = SipRequest | SipResponse;

/** Compact header forms (RFC 3261 §7.3.3, RFC 4028 x, RFC 3515 r). */
const COMPACT: Record<string, string> = {
  i: 'call-id',
  m: 'contact',
  e: 'content-encoding',
  l: 'content-length',
  c: 'content-type',
  f: 'from',
  s: 'subject',
  k: 'supported',
  t: 'to',
  v: 'via',
  x: 'session-expires',
  r: 'refer-to',
  o: 'event',
};

/** Headers whose values may be comma-joined lists that we want as separate entries. */
const LIST_HEADERS = new Set(['via', 'record-route', 'route']);

/** Ordered, case-insensitive header multimap. */
export class SipHeaders {
  private readonly entries: [name: string, value: string][] = [];

  static normalise(name: string): string {
    const n = name.trim().toLowerCase();
    return COMPACT[n] ?? n;
  }

  add(name: string, value: string): this {
    this.entries.push([SipHeaders.normalise(name), value.trim()]);
    return this;
  }

  /** Add before every other header (a new top Via). */
  prepend(name: string, value: string): this {
    this.entries.unshift([SipHeaders.normalise(name), value.trim()]);
    return this;
  }

  set(name: string, value: string): this {
    this.delete(name);
    return this.add(name, value);
  }

  /** Replace the first occurrence in place (a stamped top Via keeps its position). */
  replaceFirst(name: string, value: string): this {
    const n = SipHeaders.normalise(name);
    const e = this.entries.find((x) => x[0] === n);
    if (e) e[1] = value.trim();
    else this.add(n, value);
    return this;
  }

  delete(name: string): void {
    const n = SipHeaders.normalise(name);
    for (let i = this.entries.length - 1; i >= 0; i--) if (this.entries[i]![0] === n) this.entries.splice(i, 1);
  }

  get(name: string): string | undefined {
    const n = SipHeaders.normalise(name);
    return this.entries.find((e) => e[0] === n)?.[1];
  }

  getAll(name: string): string[] {
    const n = SipHeaders.normalise(name);
    return this.entries.filter((e) => e[0] === n).map((e) => e[1]);
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  list(): [string, string][] {
    return this.entries.map(([n, v]) => [n, v]);
  }

  clone(): SipHeaders {
    const h = new SipHeaders();
    for (const [n, v] of this.entries) h.add(n, v);
    return h;
  }
}

/** Canonical capitalisation on the wire (some carrier SBCs are picky about Call-ID / CSeq). */
const CANONICAL: Record<string, string> = {
  'call-id': 'Call-ID',
  cseq: 'CSeq',
  'www-authenticate': 'WWW-Authenticate',
  rseq: 'RSeq',
};
function wireName(n: string): string {
  return CANONICAL[n] ?? n.replace(/(^|-)([a-z])/g, (_, d: string, c: string) => d + c.toUpperCase());
}

/** Split a header value on commas outside quotes and angle brackets. */
export function splitList(value: string): string[] {
  const out: string[] = [];
  let depthAngle = 0;
  let quoted = false;
  let cur = '';
  for (const ch of value) {
    if (ch === '"') quoted = !quoted;
    else if (!quoted && ch === '<') depthAngle++;
    else if (!quoted && ch === '>') depthAngle = Math.max(0, depthAngle - 1);
    if (ch === ',' && !quoted && depthAngle === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

export type ParseResult = { ok: true; msg: SipMessage } | { ok: false; error: string };

const REQUEST_LINE = /^([A-Za-z]+) (\S+) SIP\/2\.0$/;
const STATUS_LINE = /^SIP\/2\.0 (\d{3}) ?(.*)$/;

/** Parse one datagram. Never throws: anything we cannot use comes back as `{ ok: false, error }`. */
export function parseMessage(data: Buffer | string): ParseResult {
  const text = typeof data === 'string' ? data : data.toString('latin1');
  const sep = text.indexOf('\r\n\r\n');
  const altSep = sep < 0 ? text.indexOf('\n\n') : -1;
  if (sep < 0 && altSep < 0) return { ok: false, error: 'no end of headers' };
  const headEnd = sep >= 0 ? sep : altSep;
  const head = text.slice(0, headEnd);
  let body = text.slice(headEnd + (sep >= 0 ? 4 : 2));
  // Unfold continuation lines (RFC 3261 §7.3.1).
  const lines = head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/);
  const start = lines.shift()?.trim() ?? '';
  const headers = new SipHeaders();
  for (const line of lines) {
    if (!line) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) return { ok: false, error: `malformed header line "${line.slice(0, 40)}"` };
    const name = line.slice(0, colon).trim();
    if (!/^[A-Za-z0-9!%*_+`'~.-]+$/.test(name)) return { ok: false, error: `bad header name "${name.slice(0, 40)}"` };
    const value = line.slice(colon + 1).trim();
    const n = SipHeaders.normalise(name);
    if (LIST_HEADERS.has(n)) for (const v of splitList(value)) headers.add(n, v);
    else headers.add(n, value);
  }
  const cl = headers.get('content-length');
  if (cl !== undefined) {
    const n = Number(cl);
    if (!Number.isInteger(n) || n < 0) return { ok: false, error: `bad Content-Length "${cl}"` };
    const bytes = Buffer.from(body, 'latin1');
    if (bytes.length < n) return { ok: false, error: 'body shorter than Content-Length' };
    body = bytes.subarray(0, n).toString('latin1');
  }
  let m = REQUEST_LINE.exec(start);
  if (m) return { ok: true, msg: { kind: 'request', method: m[1]!.toUpperCase(), uri: m[2]!, headers, body } };
  m = STATUS_LINE.exec(start);
  if (m) return { ok: true, msg: { kind: 'response', status: Number(m[1]), reason: m[2] ?? '', headers, body } };
  return { ok: false, error: `bad start line "${start.slice(0, 60)}"` };
}

export function serialize(msg: SipMessage): Buffer {
  const start = msg.kind === 'request' ? `${msg.method} ${msg.uri} SIP/2.0` : `SIP/2.0 ${msg.status} ${msg.reason}`;
  const body = Buffer.from(msg.body, 'latin1');
  const lines = [start];
  for (const [n, v] of msg.headers.list()) {
    if (n === 'content-length') continue;
    // Last line of defence against header injection: values are validated where they are built
    // (header-values.ts); a CR/LF/NUL reaching here is a bug, never something to put on the wire.
    if (/[\r\n\0]/.test(v)) throw new Error(`SIP header ${n} holds a line break or NUL: refusing to send`);
    lines.push(`${wireName(n)}: ${v}`);
  }
  lines.push(`Content-Length: ${body.length}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
}

/** A name-addr / addr-spec header (From, To, Contact, Refer-To, Route): URI, display name, params. */
export interface NameAddr {
  display: string | undefined;
  uri: string;
  params: Record<string, string>;
}

export function parseNameAddr(value: string): NameAddr | undefined {
  const v = value.trim();
  const lt = v.indexOf('<');
  if (lt >= 0) {
    const gt = v.indexOf('>', lt);
    if (gt < 0) return undefined;
    const display = v.slice(0, lt).trim().replace(/^"|"$/g, '') || undefined;
    return { display, uri: v.slice(lt + 1, gt).trim(), params: parseParams(v.slice(gt + 1)) };
  }
  // addr-spec: header params follow the first ';' (RFC 3261 §20.10).
  const semi = v.indexOf(';');
  const uri = semi < 0 ? v : v.slice(0, semi);
  if (!uri) return undefined;
  return { display: undefined, uri, params: semi < 0 ? {} : parseParams(v.slice(semi)) };
}

export function parseParams(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(';')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq < 0) out[p.toLowerCase()] = '';
    else out[p.slice(0, eq).trim().toLowerCase()] = p.slice(eq + 1).trim();
  }
  return out;
}

export interface SipUri {
  scheme: string;
  user: string | undefined;
  host: string;
  port: number | undefined;
  params: Record<string, string>;
}

export function parseUri(uri: string): SipUri | undefined {
  // userinfo may carry user parameters (`+250788123456;npdi;rn=+250788000000@host`, RFC 4694) and
  // a password; the user is what precedes them.
  // An IPv6 host is bracketed (RFC 3261 §25.1 IPv6reference); a stray bracket is no URI.
  const m = /^(sips?|tel):(?:([^@<>?]*)@)?(\[[0-9a-f:.]+\]|[^:;?@[\]]+)(?::(\d+))?((?:;[^?]*)?)(?:\?.*)?$/i.exec(
    uri.trim(),
  );
  if (!m) return undefined;
  if (m[1]!.toLowerCase() === 'tel') {
    return { scheme: 'tel', user: m[3], host: '', port: undefined, params: parseParams(m[5] ?? '') };
  }
  let user: string | undefined;
  if (m[2] !== undefined) {
    try {
      user = decodeURIComponent(m[2].split(';')[0]!.split(':')[0]!);
    } catch {
      return undefined; // a bad %-escape: not a URI (the request earns a 400, never a throw)
    }
  }
  return {
    scheme: m[1]!.toLowerCase(),
    user,
    host: m[3]!.replace(/^\[|\]$/g, ''),
    port: m[4] ? Number(m[4]) : undefined,
    params: parseParams(m[5] ?? ''),
  };
}

/** A host as written in a URI or Via sent-by: an IPv6 address goes in brackets (RFC 3261 §25.1, RFC 5954). */
export function hostPort(host: string, port?: number): string {
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return port === undefined ? h : `${h}:${port}`;
}

export interface Via {
  transport: string;
  host: string;
  port: number | undefined;
  params: Record<string, string>;
}

export function parseVia(value: string): Via | undefined {
  const m = /^SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z]+)\s+(\[[0-9a-f:.]+\]|[^:;\s[\]]+)(?::(\d+))?\s*(.*)$/i.exec(
    value.trim(),
  );
  if (!m) return undefined;
  return {
    transport: m[1]!.toUpperCase(),
    host: m[2]!.replace(/^\[|\]$/g, ''),
    port: m[3] ? Number(m[3]) : undefined,
    params: parseParams(m[4] ?? ''),
  };
}

export function parseCSeq(value: string | undefined): { seq: number; method: string } | undefined {
  const m = /^(\d{1,10})\s+([A-Za-z]+)$/.exec(value?.trim() ?? '');
  if (!m) return undefined;
  const seq = Number(m[1]);
  return seq < 2 ** 31 ? { seq, method: m[2]!.toUpperCase() } : undefined;
}

/** The fields every request we act on must carry; anything missing earns a 400 (if we can reply at all). */
export function validateRequest(req: SipRequest): string | undefined {
  const h = req.headers;
  for (const name of ['via', 'call-id', 'from', 'to', 'cseq']) if (!h.has(name)) return `missing ${name} header`;
  const cseq = parseCSeq(h.get('cseq'));
  if (!cseq) return 'bad CSeq';
  if (cseq.method !== req.method) return 'CSeq method does not match the request';
  if (!parseVia(h.get('via')!)) return 'bad Via';
  for (const n of ['from', 'to']) {
    const na = parseNameAddr(h.get(n)!);
    if (!na || !parseUri(na.uri)) return `bad ${n} header`;
  }
  if (!parseUri(req.uri)) return 'bad Request-URI';
  const mf = h.get('max-forwards');
  if (mf !== undefined && !/^\d{1,3}$/.test(mf)) return 'bad Max-Forwards';
  return undefined;
}

export const REASONS: Record<number, string> = {
  100: 'Trying',
  180: 'Ringing',
  200: 'OK',
  202: 'Accepted',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  415: 'Unsupported Media Type',
  420: 'Bad Extension',
  422: 'Session Interval Too Small',
  480: 'Temporarily Unavailable',
  481: 'Call/Transaction Does Not Exist',
  482: 'Loop Detected',
  483: 'Too Many Hops',
  486: 'Busy Here',
  487: 'Request Terminated',
  488: 'Not Acceptable Here',
  491: 'Request Pending',
  500: 'Server Internal Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};

/**
 * Build a response to `req` (RFC 3261 §8.2.6: copy Via, From, To, Call-ID, CSeq; add our To tag).
 * Every response but 100 carries a To tag (§8.2.6.2): a fresh one when the caller has none to give
 * (a 405/415/420/501 rejecting an INVITE before any transaction state).
 */
export function makeResponse(req: SipRequest, status: number, reason?: string, toTag = newToTag()): SipResponse {
  const headers = new SipHeaders();
  for (const v of req.headers.getAll('via')) headers.add('via', v);
  if (status > 100) for (const rr of req.headers.getAll('record-route')) headers.add('record-route', rr);
  const from = req.headers.get('from');
  if (from) headers.add('from', from);
  let to = req.headers.get('to');
  if (to && toTag && status > 100 && !/;\s*tag=/i.test(to)) to = `${to};tag=${toTag}`;
  if (to) headers.add('to', to);
  for (const n of ['call-id', 'cseq']) {
    const v = req.headers.get(n);
    if (v) headers.add(n, v);
  }
  return { kind: 'response', status, reason: reason ?? REASONS[status] ?? 'Unknown', headers, body: '' };
}

const newToTag = () => randomBytes(6).toString('hex');

export function tagOf(headerValue: string | undefined): string | undefined {
  return headerValue ? parseNameAddr(headerValue)?.params.tag : undefined;
}

/** Every token of a list header over all its occurrences (Require, Supported, Allow...), lower case. */
export function headerTokens(headers: SipHeaders, name: string): string[] {
  return headers
    .getAll(name)
    .flatMap((v) => splitList(v))
    .map((t) => t.toLowerCase())
    .filter(Boolean);
}

export type SdpBody = { ok: true; sdp: string | undefined } | { ok: false; reason: string };

/**
 * The SDP of a request: its body when application/sdp, the application/sdp part of a
 * multipart/mixed body (SIP-I/SIP-T: SDP + ISUP, RFC 3204/5621), none when body-less. Other
 * parts (ISUP) are ignored whatever their handling parameter: interworking trunks mark them
 * optional in practice, and the call needs only the SDP.
 */
export function sdpOf(msg: SipMessage): SdpBody {
  if (!msg.body.trim()) return { ok: true, sdp: undefined };
  const ct = msg.headers.get('content-type') ?? 'application/sdp'; // RFC 3261 §20.15: SDP when absent
  if (/^\s*application\/sdp\s*(;|$)/i.test(ct)) return { ok: true, sdp: msg.body };
  if (!/^\s*multipart\/mixed\s*;/i.test(ct)) return { ok: false, reason: `unsupported body type ${ct.split(';')[0]}` };
  const boundary = /;\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i.exec(ct);
  const b = boundary?.[1] ?? boundary?.[2];
  if (!b) return { ok: false, reason: 'multipart body without a boundary' };
  for (const part of multipartParts(msg.body, b)) {
    const sep = /\r?\n\r?\n/.exec(part);
    const head = sep ? part.slice(0, sep.index) : '';
    const body = sep ? part.slice(sep.index + sep[0].length) : part;
    const pct = /^content-type\s*:\s*([^\r\n]*)/im.exec(head)?.[1] ?? 'text/plain'; // RFC 2046 §5.1 default
    if (/^application\/sdp\s*(;|$)/i.test(pct.trim())) return { ok: true, sdp: body };
  }
  return { ok: false, reason: 'multipart body without an SDP part' };
}

/** The parts of a multipart body between `--boundary` delimiters (RFC 2046 §5.1.1), preamble and epilogue dropped. */
function multipartParts(body: string, boundary: string): string[] {
  const delim = `--${boundary}`;
  const parts: string[] = [];
  let at = body.indexOf(delim);
  while (at >= 0) {
    const start = body.indexOf('\n', at);
    if (start < 0 || body.startsWith(`${delim}--`, at)) break;
    const next = body.indexOf(`\n${delim}`, start);
    const end = next < 0 ? body.length : next;
    parts.push(body.slice(start + 1, end).replace(/\r$/, ''));
    at = next < 0 ? -1 : next + 1;
  }
  return parts;
}
