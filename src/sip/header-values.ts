import { GatewayError } from '../core/errors.js';

/**
 * The one check for values we put into SIP headers (Refer-To, From, P-Asserted-Identity, the
 * API's `from`). A value that came from a stranger (the model, a webhook, an API body, a carrier's
 * From) must never be able to end a header line (CR/LF: header injection) or smuggle URI
 * parameters/headers into ours. Values are accepted only when they fit a narrow grammar:
 * E.164 numbers, dialable digit strings, and sip:/sips:/tel: URIs (RFC 3261 §25.1, RFC 3966).
 */

/** C0 controls, DEL: nothing in a SIP header value we build needs them (CR/LF end the header). */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** RFC 3261 `user` unreserved + escaped + user-unreserved, without '?' and without ';'. */
const USER = /^(?:[A-Za-z0-9\-_.!~*'()&=+$,/]|%[0-9A-Fa-f]{2})+$/;
/** hostname (RFC 3261 §25.1), IPv4, or bracketed IPv6. */
const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])$/;
/** uri-parameter: `name` or `name=value`, token characters only. */
const PARAM = /^[A-Za-z0-9\-_.!~*'()%[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()%[\]/:&+$]+)?$/;

export const E164 = /^\+[1-9]\d{5,14}$/;
/** A number as carriers and operators write it: optional +, digits (and * # for services). */
const DIALABLE = /^\+?[0-9*#]{2,32}$/;

export function hasControlChars(value: string): boolean {
  return CONTROL.test(value);
}

export function isE164(value: string): boolean {
  return E164.test(value);
}

/** sip:/sips: URI with optional user, host, port and token parameters; no headers (`?`), no display names. */
export function isSipUri(value: string): boolean {
  if (value.length > 256 || hasControlChars(value)) return false;
  const m = /^(sips?):(?:([^@]+)@)?(\[[^\]]+\]|[^:;?@]+)(?::(\d{1,5}))?((?:;[^;?]*)*)$/i.exec(value);
  if (!m) return false;
  const [, , user, host, port, params] = m;
  if (user !== undefined && !USER.test(user)) return false;
  if (!HOST.test(host!)) return false;
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) return false;
  return (params ?? '')
    .split(';')
    .slice(1)
    .every((p) => PARAM.test(p));
}

/** tel: URI for a global number (RFC 3966 global-number-digits, visual separators allowed). */
export function isTelUri(value: string): boolean {
  return /^tel:\+[0-9][0-9\-.()]{5,30}$/i.test(value);
}

/**
 * A destination for Refer-To or a Request-URI user: an E.164/dialable number or a sip/sips/tel
 * URI, or whatsapp:+<number> (bridged transfers only). Returns the canonical form (numbers without
 * visual separators), or undefined when unsafe.
 */
export function normaliseDestination(value: string): string | undefined {
  const v = value.trim();
  if (!v || hasControlChars(v)) return undefined;
  // A person on WhatsApp (bridged transfer as a business-initiated call): whatsapp:+<E.164>.
  if (/^whatsapp:/i.test(v)) {
    const number = v.slice('whatsapp:'.length).replace(/[ \-.()]/g, '');
    return /^\+\d{6,15}$/.test(number) ? `whatsapp:${number}` : undefined;
  }
  if (/^(sips?|tel):/i.test(v)) {
    if (/^tel:/i.test(v)) return isTelUri(v) ? `tel:${v.slice(4).replace(/[-.()]/g, '')}` : undefined;
    return isSipUri(v) ? v : undefined;
  }
  const digits = v.replace(/[ \-.()]/g, '');
  return DIALABLE.test(digits) ? digits : undefined;
}

/**
 * Caller identity for From/P-Asserted-Identity user parts: a dialable number, or a plain
 * RFC 3261 user (e.g. "anonymous"). Anything else is refused.
 */
export function isIdentityUser(value: string): boolean {
  return value.length <= 64 && !hasControlChars(value) && (DIALABLE.test(value) || USER.test(value));
}

/** Throw a typed error (carrying the call id) when `value` cannot safely go into header `header`. */
export function requireHeaderValue(
  header: string,
  value: string,
  valid: (v: string) => boolean,
  callId?: string,
): string {
  if (!valid(value))
    throw new GatewayError(
      'invalid_request',
      `refusing to put ${JSON.stringify(value.slice(0, 80))} into ${header}: not a valid SIP value`,
      callId,
    );
  return value;
}

/**
 * Refer-To target for a transfer: a validated sip/sips/tel URI as given, or a number turned into a
 * SIP URI by `numberUri` (the trunk's host). Throws `invalid_request` for anything else.
 */
export function referTarget(destination: string, numberUri: (number: string) => string, callId?: string): string {
  const d = normaliseDestination(destination);
  if (d === undefined) return requireHeaderValue('Refer-To', destination, () => false, callId);
  const target = /^(sips?|tel):/i.test(d) ? d : numberUri(d);
  return requireHeaderValue('Refer-To', target, (t) => isSipUri(t) || isTelUri(t), callId);
}

/**
 * Caller identity for an outbound leg (From user, P-Asserted-Identity): what the carrier or
 * WhatsApp sent us passes through only when it fits the grammar; otherwise the leg goes out
 * anonymous (RFC 3323) rather than failing the call or carrying a stranger's bytes.
 */
export function safeIdentity(value: string): string {
  if (isIdentityUser(value) || isSipUri(value) || isTelUri(value)) return value;
  // A name-addr (a trunk's presented identity: optional quoted display name, then <URI>).
  const inner = NAME_ADDR.exec(value)?.[1];
  return inner !== undefined && !hasControlChars(value) && (isSipUri(inner) || isTelUri(inner)) ? value : 'anonymous';
}

/** `"Display" <uri>` or `<uri>`: the display name quoted without quotes or backslashes inside. */
const NAME_ADDR = /^(?:"[^"\\]*"\s*)?<([^<>\s]+)>$/;

/** Header values for an outbound INVITE: identity headers must hold a valid URI; none may hold controls. */
export function safeExtraHeaders(headers: Record<string, string>): {
  headers: Record<string, string>;
  dropped: string[];
} {
  const out: Record<string, string> = {};
  const dropped: string[] = [];
  for (const [k, v] of Object.entries(headers)) {
    const identity = /^p-(asserted|preferred)-identity$/i.test(k);
    const inner = /^<([^<>]*)>$/.exec(v)?.[1];
    const ok = !hasControlChars(v) && (!identity || (inner !== undefined && (isSipUri(inner) || isTelUri(inner))));
    if (ok) out[k] = v;
    else dropped.push(k);
  }
  return { headers: out, dropped };
}
