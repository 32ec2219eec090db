import { randomBytes } from 'node:crypto';
import { parseNameAddr, parseUri, SipHeaders, splitList, type SipRequest, type SipResponse } from './message.js';
import type { SipTransport } from './srv.js';

/**
 * The messages of outbound registration (RFC 3261 §10.2) as pure functions: the Contact we bind,
 * the REGISTER and keep-alive OPTIONS requests, and reading the expiry the registrar granted.
 * TrunkRegistration (registration.ts) holds the state; digest is added by the caller.
 */

/** The dialog-like identity every REGISTER of one registration shares (§10.2: same Call-ID, rising CSeq). */
export interface RegisterIds {
  aor: string;
  callId: string;
  localTag: string;
  cseq: number;
}

/** Our Contact: the advertised address, `transport=` only where it is not the scheme's default. */
export function contactUriFor(
  registrarUri: string,
  contactUser: string,
  transport: SipTransport,
  advertised: { address: string; port: number },
): string {
  const host = advertised.address.includes(':') ? `[${advertised.address}]` : advertised.address;
  const scheme = /^sips:/i.test(registrarUri) ? 'sips' : 'sip';
  return `${scheme}:${contactUser}@${host}:${advertised.port}${transport === 'udp' || scheme === 'sips' ? '' : `;transport=${transport}`}`;
}

/** The registrar URI without user part or header parameters (RFC 3261 §10.2). */
export function registerRequestUri(registrarUri: string): string {
  const u = parseUri(registrarUri)!;
  const host = u.host.includes(':') ? `[${u.host}]` : u.host;
  return `${u.scheme}:${host}${u.port ? `:${u.port}` : ''}`;
}

/** A REGISTER binding `contacts` for `expires` seconds (no Authorization: the digest session adds it). */
export function registerRequest(
  ids: RegisterIds,
  registrarUri: string,
  contacts: string[],
  expires: number,
): SipRequest {
  const h = new SipHeaders();
  h.add('from', `<${ids.aor}>;tag=${ids.localTag}`);
  h.add('to', `<${ids.aor}>`);
  h.add('call-id', ids.callId);
  h.add('cseq', `${ids.cseq} REGISTER`);
  for (const c of contacts) h.add('contact', c);
  h.add('expires', String(expires));
  h.add('allow', 'INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY, INFO');
  return { kind: 'request', method: 'REGISTER', uri: registerRequestUri(registrarUri), headers: h, body: '' };
}

/** An out-of-dialog OPTIONS to the registrar (UDP keep-alive that also notices a dead registrar). */
export function keepAliveOptions(aor: string, registrarUri: string): SipRequest {
  const uri = registerRequestUri(registrarUri);
  const h = new SipHeaders();
  h.add('from', `<${aor}>;tag=${randomBytes(6).toString('hex')}`);
  h.add('to', `<${uri}>`);
  h.add('call-id', randomBytes(12).toString('hex'));
  h.add('cseq', '1 OPTIONS');
  return { kind: 'request', method: 'OPTIONS', uri, headers: h, body: '' };
}

/**
 * The expiry granted to our contact: its `expires` parameter in the 200's Contact list (RFC 3261
 * §10.2.4), else the Expires header, else what we asked for.
 */
export function grantedExpiry(res: SipResponse, ourContact: string, requested: number): number {
  const ours = normaliseUri(ourContact);
  for (const c of res.headers.getAll('contact')) {
    for (const one of splitList(c)) {
      const na = parseNameAddr(one);
      if (na && normaliseUri(na.uri) === ours && na.params.expires !== undefined) {
        const n = Number(na.params.expires);
        if (Number.isInteger(n) && n >= 0) return n;
      }
    }
  }
  const e = Number(res.headers.get('expires'));
  return Number.isInteger(e) && e >= 0 ? e : requested;
}

/** Compare contacts on scheme, user, host, port and transport (registrars reorder parameters). */
function normaliseUri(uri: string): string {
  const u = parseUri(uri);
  if (!u) return uri.toLowerCase();
  return `${u.scheme}:${u.user ?? ''}@${u.host.toLowerCase()}:${u.port ?? ''};${(u.params.transport ?? 'udp').toLowerCase()}`;
}
