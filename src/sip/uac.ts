import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { GatewayError } from '../core/errors.js';
import type { SipDialog } from './engine.js';
import {
  ALLOW,
  type Dest,
  type EmbeddedSipEngine,
  newBranch,
  newTag,
  SUPPORTED,
  type DialTransport,
  type Transport,
} from './embedded.js';
import { DigestSession, type DigestClientCredentials } from './digest-client.js';
import { hasControlChars, isIdentityUser, isSipUri, isTelUri, requireHeaderValue } from './header-values.js';
import { hostPort, SipHeaders, type SipRequest, type SipResponse } from './message.js';
import { InviteClientTx } from './invite-client-tx.js';
import { resolveSipTargets, type SipDnsResolver } from './srv.js';

/**
 * The embedded engine's UAC side: INVITEs we place (OpenAI's SIP endpoint, SIP dial-out). Hand-written
 * on the same transport and message code as the UAS (see message.ts for why no npm SIP stack):
 * the RFC 3261 §17.1.1 INVITE client transaction (timer A retransmission over UDP, timer B),
 * ACK for non-2xx within the transaction and for 2xx from the dialog (§13.2.2.4, re-sent for
 * every retransmitted 2xx, RFC 6026), CANCEL (§9.1) when the caller gives up, and the dialog.
 * Here: target selection, the INVITE we build and its digest retry; the transaction itself is in
 * invite-client-tx.ts.
 */
export interface InviteOptions {
  /** Request-URI, e.g. `sip:proj_1@sip.api.openai.com;transport=tls` or `sip:+250788@10.0.0.1:5060`. */
  uri: string;
  /** Our party: a user part (`+250788000001`), a SIP URI or a name-addr. */
  from: string;
  /** Their party (To); defaults to the Request-URI. */
  to?: string;
  /** Extra headers, sent as given (e.g. X-Gateway-Call-Id, P-Asserted-Identity). */
  headers?: Record<string, string>;
  /** Our SDP offer. */
  sdp: string;
  /** No final answer within this → CANCEL and reject with a timeout. */
  timeoutMs: number;
  /** Overrides the URI's transport parameter. */
  transport?: DialTransport;
  /** Stream transports: how long opening the TCP/TLS connection may take (default 5 s, capped by timeoutMs). */
  connectTimeoutMs?: number;
  /** Aborting before the answer sends CANCEL (the call ended while ringing). */
  signal?: AbortSignal;
  /** An RFC 3326 Reason for that CANCEL (why the call ended), read when the CANCEL is built. */
  cancelReason?: () => string | undefined;
  /** The gateway call this INVITE belongs to (errors and logs carry it). */
  callId?: string;
  /** Each provisional response (180 ringing, 183 progress). */
  onProvisional?: (status: number, reason: string) => void;
  /** Answer a 401/407 with these (one retry per challenge: same Call-ID and From tag, CSeq + 1). */
  credentials?: DigestClientCredentials;
  /** DNS for RFC 3263 target selection (tests inject one). */
  resolver?: SipDnsResolver;
}

export interface InviteResult {
  dialog: SipDialog;
  /** The far end's SDP answer from the 2xx. */
  sdp: string;
  status: number;
  /** The 2xx's headers. */
  headers: SipHeaders;
  /** Where the INVITE went (after DNS). */
  dest: { address: string; port: number; transport: Transport };
}

/** What the engine routes responses to (keyed by branch|method). */
export interface UacTx {
  /** Where its requests go (the engine keeps that stream connection while the transaction lives). */
  readonly dest: Dest;
  onResponse(res: SipResponse): void;
  dispose(): void;
}

const CONNECT_TIMEOUT_MS = 5000;

/**
 * Every destination for the Request-URI in RFC 3263 order (SRV when the URI has a host name and no
 * port, else A records); the transport from the URI or the override.
 */
export async function resolveTargets(
  uri: string,
  override: DialTransport | undefined,
  callId?: string,
  resolver?: SipDnsResolver,
  ipv6 = false,
): Promise<Dest[]> {
  // AAAA records too when we can signal over IPv6 (sip.host an IPv6 address or `::`).
  const targets = await resolveSipTargets(uri, { transport: override, callId, resolver, family: ipv6 ? 0 : 4 });
  return targets.map((t) => ({ ...t }));
}

/** A failure worth trying the next RFC 3263 target for (§4.3): no answer at all, 503, or no connection. */
function failsOver(err: unknown): boolean {
  const e = err as GatewayError;
  return e.details?.failover === true;
}

export class SipUac {
  constructor(private readonly engine: EmbeddedSipEngine) {}

  async invite(opts: InviteOptions): Promise<InviteResult> {
    const targets = await resolveTargets(
      opts.uri,
      opts.transport,
      opts.callId,
      opts.resolver,
      this.engine.transports.ipv6,
    );
    const e = this.engine;
    const dialogId = {
      sipCallId: `${randomBytes(12).toString('hex')}@${e.publicAddress}`,
      fromTag: newTag(),
      cseq: Math.floor(Math.random() * 10000) + 1,
    };
    const digest = opts.credentials ? new DigestSession(opts.credentials) : undefined;
    for (let i = 0; ; i++) {
      const dest = targets[i]!;
      try {
        return await this.attempt(opts, dest, dialogId, digest);
      } catch (err) {
        if (i + 1 >= targets.length || !failsOver(err) || opts.signal?.aborted) throw err;
        e.log.info(
          { callId: opts.callId, uri: opts.uri, failed: `${dest.transport}:${dest.address}:${dest.port}` },
          `${(err as Error).message}: trying the next target (RFC 3263)`,
        );
        dialogId.cseq++;
      }
    }
  }

  /** One target: connect (streams), INVITE, and the digest round when challenged. */
  private async attempt(
    opts: InviteOptions,
    dest: Dest,
    id: { sipCallId: string; fromTag: string; cseq: number },
    digest: DigestSession | undefined,
  ): Promise<InviteResult> {
    if (opts.signal?.aborted) throw new GatewayError('leg_closed', 'dial aborted before the INVITE', opts.callId);
    const e = this.engine;
    if (isIP(dest.address) === 6 && !e.transports.ipv6)
      throw new GatewayError('config_invalid', `cannot reach IPv6 ${dest.address}: sip.host is IPv4`, opts.callId, {
        details: { failover: true },
      });
    if (dest.transport !== 'udp') {
      // Connect first: a refused connection or a bad certificate fails the dial at once, with its cause.
      const ms = Math.min(opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS, opts.timeoutMs);
      try {
        dest.conn = await e.transports.connectStream(dest, ms, opts.callId);
      } catch (err) {
        const ge = err as GatewayError;
        throw new GatewayError(ge.code ?? 'upstream', ge.message, opts.callId, {
          cause: err,
          details: { ...ge.details, failover: true },
        });
      }
      if (opts.signal?.aborted) {
        e.checkRelease(dest);
        throw new GatewayError('leg_closed', 'dial aborted before the INVITE', opts.callId);
      }
      if (dest.transport === 'tls' && !e.transports.tlsListening)
        e.log.info(
          { callId: opts.callId, uri: opts.uri },
          'no SIP TLS listener: in-dialog requests from the far end must come over our connection',
        );
    }
    // Every value that goes into a header is checked (no CR/LF: header injection).
    const fromUri = opts.from.includes('<')
      ? requireHeaderValue('From', opts.from, (v) => !hasControlChars(v), opts.callId)
      : /^(sips?|tel):/i.test(opts.from)
        ? requireHeaderValue('From', opts.from, (v) => isSipUri(v) || isTelUri(v), opts.callId)
        : `sip:${requireHeaderValue('From', opts.from, isIdentityUser, opts.callId)}@${hostPort(e.transports.localAddress(dest.address))}`;
    const extra = Object.entries(opts.headers ?? {}).map(
      ([k, v]) => [k, requireHeaderValue(k, v, (x) => !hasControlChars(x), opts.callId)] as const,
    );
    const from = `${fromUri.includes('<') ? fromUri : `<${fromUri}>`};tag=${id.fromTag}`;
    const to = opts.to ?? `<${opts.uri}>`;
    let retried = false;
    for (;;) {
      const branch = newBranch();
      const cseq = id.cseq;
      const headers = new SipHeaders();
      headers.add('via', e.viaFor(dest.transport, branch, dest.address));
      headers.add('max-forwards', '70');
      headers.add('from', from);
      headers.add('to', to);
      headers.add('call-id', id.sipCallId);
      headers.add('cseq', `${cseq} INVITE`);
      headers.add('contact', e.contactFor(dest.transport, /^sips:/i.test(opts.uri), dest.address));
      headers.add('allow', ALLOW);
      headers.add('supported', SUPPORTED.join(', '));
      headers.add('user-agent', e.userAgent);
      for (const [k, v] of extra) headers.set(k, v);
      const auth = digest?.authorize('INVITE', opts.uri);
      if (auth) headers.set(auth.name, auth.value);
      headers.set('content-type', 'application/sdp');
      const req: SipRequest = { kind: 'request', method: 'INVITE', uri: opts.uri, headers, body: opts.sdp };
      e.log.info(
        {
          sipCallId: id.sipCallId,
          callId: opts.callId,
          uri: opts.uri,
          dest: `${dest.transport}:${dest.address}:${dest.port}`,
          auth: !!auth,
        },
        'sending INVITE',
      );
      try {
        return await new Promise<InviteResult>((resolve, reject) => {
          new InviteClientTx(e, req, branch, cseq, dest, opts, resolve, reject);
        });
      } catch (err) {
        const details = (err as GatewayError).details;
        const challenge = details?.challenge as SipResponse | undefined;
        if (details) delete details.challenge; // a whole response is not for logs or API callers
        if (!challenge || !digest || opts.signal?.aborted) throw err;
        const v = digest.onChallenge(challenge.status, challenge.headers, retried);
        if (!v.ok) {
          e.log.warn({ callId: opts.callId, status: challenge.status, why: v.why }, 'INVITE challenge not answered');
          throw err;
        }
        // RFC 3261 §22.2: the same Call-ID and From tag, the next CSeq, the challenge already ACKed.
        retried = true;
        id.cseq++;
      }
    }
  }
}
