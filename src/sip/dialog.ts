import { GatewayError } from '../core/errors.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import type { ModifyRequest, SipDialog, SipDialogEvents } from './engine.js';
import type { EmbeddedSipEngine } from './embedded.js';
import type { UacTx } from './uac.js';
import {
  makeResponse,
  parseCSeq,
  parseNameAddr,
  parseUri,
  sdpOf,
  serialize,
  SipHeaders,
  tagOf,
  type SipRequest,
  type SipResponse,
} from './message.js';
import {
  ACCEPT,
  ALLOW,
  type Dest,
  isSips,
  newBranch,
  Retransmitter,
  SUPPORTED,
  type Transport,
} from './transactions.js';

/** What a dialog is made of (RFC 3261 §12.1), from whichever side set it up. */
export interface DialogInit {
  callId: string;
  localTag: string;
  /** Our party as we write it in From of our requests (a tag is added if it has none). */
  localUri: string;
  /** Their party as we write it in To (with their tag). */
  remoteUri: string;
  remoteTarget: string;
  /** Route set in the order our requests carry it. */
  routeSet: string[];
  /** Highest CSeq seen from them (0: none yet, any is in order). */
  remoteSeq: number;
  /** Our last CSeq (the UAC's INVITE); random when unset. */
  localSeq?: number;
  /** Where the dialog started (fallback target; the stream connection to reuse). */
  src: Dest;
  /** Set up by a sips: request: our Contact is sips: too (RFC 5630). */
  secure?: boolean;
  /** The far end's Allow (from its INVITE or 2xx): a session refresh is an UPDATE only if it lists UPDATE. */
  remoteAllow?: string;
}

/**
 * Header values that may be comma-separated lists of name-addrs (Record-Route, Route): one entry
 * each, splitting only on commas outside <...> and quotes.
 */
export function splitNameAddrs(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    let depth = 0;
    let quoted = false;
    let start = 0;
    for (let i = 0; i < v.length; i++) {
      const c = v[i];
      if (c === '"' && v[i - 1] !== '\\') quoted = !quoted;
      else if (!quoted && c === '<') depth++;
      else if (!quoted && c === '>') depth--;
      else if (!quoted && depth === 0 && c === ',') {
        out.push(v.slice(start, i).trim());
        start = i + 1;
      }
    }
    out.push(v.slice(start).trim());
  }
  return out.filter(Boolean);
}

/** Whether an Allow value lists a method. */
const allows = (allow: string | undefined, method: string) =>
  (allow ?? '').split(',').some((m) => m.trim().toUpperCase() === method);

/** UAS side (RFC 3261 §12.1.1): from the INVITE we answered. */
export function uasDialogInit(invite: SipRequest, src: Dest, localTag: string): DialogInit {
  const remoteUri = invite.headers.get('from')!;
  return {
    callId: invite.headers.get('call-id')!,
    localTag,
    localUri: invite.headers.get('to')!,
    remoteUri,
    remoteTarget: parseNameAddr(invite.headers.get('contact') ?? '')?.uri ?? parseNameAddr(remoteUri)!.uri,
    routeSet: splitNameAddrs(invite.headers.getAll('record-route')),
    remoteSeq: parseCSeq(invite.headers.get('cseq'))!.seq,
    src,
    secure: isSips(invite),
    remoteAllow: invite.headers.getAll('allow').join(', ') || undefined,
  };
}

/** A dialog (UAS side, or UAC side from src/sip/uac.ts) and its in-dialog requests. */
export class EmbeddedDialog extends TypedEmitter<SipDialogEvents> implements SipDialog {
  readonly callId: string;
  readonly localTag: string;
  readonly remoteTag: string | undefined;
  private readonly localUri: string; // our party (UAS: the INVITE's To; UAC: our From with its tag)
  private readonly remoteUri: string; // their party with their tag
  private remoteTarget: string;
  private readonly routeSet: string[];
  private localSeq: number;
  private remoteSeq: number;
  private readonly src: Dest;
  private readonly secure: boolean;
  private destroyed = false;
  private byeSent: Promise<void> | undefined;
  private pendingReinvite:
    { cseq: number; rt: Retransmitter; onAck: ((sdp: string | undefined) => void) | undefined } | undefined;
  private remoteAllow: string | undefined;
  /** Our re-INVITE in progress (RFC 3261 §14.1: one at a time). */
  private reinviting = false;

  constructor(
    private readonly engine: EmbeddedSipEngine,
    init: DialogInit,
  ) {
    super();
    this.callId = init.callId;
    this.localTag = init.localTag;
    this.remoteUri = init.remoteUri;
    this.remoteTag = tagOf(this.remoteUri);
    this.localUri = init.localUri;
    this.remoteTarget = init.remoteTarget;
    this.routeSet = init.routeSet;
    this.remoteSeq = init.remoteSeq;
    this.localSeq = init.localSeq ?? Math.floor(Math.random() * 10000) + 1;
    this.src = init.src;
    this.secure = init.secure ?? false;
    this.remoteAllow = init.remoteAllow;
  }

  /** Where the dialog was set up (its stream connection, if any, is kept while the dialog lives). */
  get origin(): Dest {
    return this.src;
  }

  /**
   * The ACK for our INVITE's 2xx (UAC, RFC 3261 §13.2.2.4): its own transaction-less request to the
   * remote target through the route set, with the INVITE's CSeq number. Returned so the UAC can
   * resend the same bytes for each retransmitted 2xx.
   */
  buildAck(cseq: number, sdp?: string): { buf: Buffer; dest: Dest } {
    const headers = new SipHeaders();
    const t = this.dest();
    headers.add('via', this.engine.viaFor(t.transport, newBranch(), t.address));
    headers.add('max-forwards', '70');
    for (const r of this.routeSet) headers.add('route', r);
    headers.add('from', /;\s*tag=/i.test(this.localUri) ? this.localUri : `${this.localUri};tag=${this.localTag}`);
    headers.add('to', this.remoteUri);
    headers.add('call-id', this.callId);
    headers.add('cseq', `${cseq} ACK`);
    headers.add('user-agent', this.engine.userAgent);
    if (sdp) headers.add('content-type', 'application/sdp');
    const body = sdp ?? '';
    return { buf: serialize({ kind: 'request', method: 'ACK', uri: this.remoteTarget, headers, body }), dest: t };
  }

  /** Where in-dialog requests go: the first loose route, else the remote target; the source as fallback. */
  private dest(): Dest {
    // A browser (SIP over WebSocket) is reachable only over the connection it opened (RFC 7118 §5).
    if (this.src.transport === 'ws' || this.src.transport === 'wss') return this.src;
    const first = this.routeSet[0] ? parseNameAddr(this.routeSet[0])?.uri : undefined;
    const uri = parseUri(first ?? this.remoteTarget);
    if (!uri || uri.scheme === 'tel' || !uri.host) return this.src;
    const wanted = uri.params.transport?.toLowerCase() ?? (uri.scheme === 'sips' ? 'tls' : this.src.transport);
    const transport: Transport = wanted === 'tcp' || wanted === 'tls' ? wanted : 'udp';
    // Over TCP/TLS, reuse the connection the dialog was set up over while it is up (RFC 3261
    // §18.1.1; OpenAI and SBCs expect in-dialog requests both ways on it).
    if (transport === this.src.transport && this.src.conn && !this.src.conn.destroyed) return this.src;
    const port = uri.port ?? (transport === 'tls' ? 5061 : 5060);
    return { address: uri.host, port, transport, serverName: transport === 'tls' ? uri.host : undefined };
  }

  private newRequest(method: string, extra: Record<string, string> = {}, body = ''): SipRequest {
    const headers = new SipHeaders();
    for (const r of this.routeSet) headers.add('route', r);
    const to = this.remoteUri;
    headers.add('from', /;\s*tag=/i.test(this.localUri) ? this.localUri : `${this.localUri};tag=${this.localTag}`);
    headers.add('to', to);
    headers.add('call-id', this.callId);
    headers.add('cseq', `${++this.localSeq} ${method}`);
    headers.add('contact', this.engine.contactFor(this.src.transport, this.secure, this.src.address));
    for (const [k, v] of Object.entries(extra)) headers.set(k, v);
    return { kind: 'request', method, uri: this.remoteTarget, headers, body };
  }

  onRequest(req: SipRequest, src: Dest): void {
    const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
    if (cseq < this.remoteSeq && req.method !== 'ACK')
      return void this.engine.reply(req, src, 500, 'Server Internal Error (CSeq out of order)');
    this.remoteSeq = Math.max(this.remoteSeq, cseq);
    switch (req.method) {
      case 'BYE':
        this.engine.reply(req, src, 200);
        this.engine.log.info({ sipCallId: this.callId }, 'BYE received');
        this.emit('bye');
        this.destroy();
        return;
      case 'INVITE':
      case 'UPDATE':
        return this.onModify(req, src);
      case 'NOTIFY': // REFER progress (message/sipfrag): acknowledged, logged
        this.engine.log.info(
          { sipCallId: this.callId, event: req.headers.get('event'), frag: req.body.split('\r\n')[0] },
          'NOTIFY',
        );
        return void this.engine.reply(req, src, 200);
      case 'INFO':
        return void this.engine.reply(req, src, 200);
      case 'REFER':
        return void this.engine.reply(req, src, 501, 'Not Implemented (transfer from the trunk side)');
    }
  }

  private onModify(req: SipRequest, src: Dest): void {
    const isInvite = req.method === 'INVITE';
    if (isInvite && this.pendingReinvite) return void this.engine.reply(req, src, 491);
    const contact = parseNameAddr(req.headers.get('contact') ?? '')?.uri;
    if (contact) this.remoteTarget = contact; // target refresh (RFC 3261 §12.2.2, RFC 3311 §5.2)
    const allow = req.headers.getAll('allow').join(', ');
    if (allow) this.remoteAllow = allow;
    const body = sdpOf(req);
    if (!body.ok)
      return void this.engine.reply(req, src, 415, `Unsupported Media Type (${body.reason})`, { accept: ACCEPT });
    let answered = false;
    const modify: ModifyRequest = {
      method: isInvite ? 'INVITE' : 'UPDATE',
      sdp: body.sdp,
      header: (name) => req.headers.getAll(name).join(', ') || undefined,
      respond: (a) => {
        if (answered || this.destroyed) return;
        answered = true;
        if ('status' in a) return void this.engine.reply(req, src, a.status, a.reason, a.headers ?? {}, this.localTag);
        const res = makeResponse(req, 200, 'OK', this.localTag);
        res.headers.set('contact', this.engine.contactFor(this.src.transport, this.secure, this.src.address));
        res.headers.set('allow', ALLOW);
        res.headers.set('supported', SUPPORTED.join(', '));
        for (const [k, v] of Object.entries(a.headers ?? {})) res.headers.set(k, v);
        // RFC 3311 §5.2: an UPDATE without an offer is answered without an answer (a session
        // refresh); a body-less re-INVITE gets our offer (RFC 3261 §14.2).
        if (a.sdp !== undefined && (isInvite || body.sdp)) {
          res.headers.set('content-type', 'application/sdp');
          res.body = a.sdp;
        }
        this.engine.respond(req, res, src);
        if (!isInvite) return;
        const buf = serialize(res);
        const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
        const rt = new Retransmitter(
          () => this.engine.sendRaw(buf, src),
          this.engine.t1,
          this.engine.t2,
          () => {
            const onAck = this.pendingReinvite?.onAck;
            this.pendingReinvite = undefined;
            this.engine.log.warn({ sipCallId: this.callId }, 'no ACK for re-INVITE 200');
            onAck?.(undefined);
          },
        );
        this.pendingReinvite = { cseq, rt, onAck: a.onAck };
      },
    };
    this.emit('modify', modify);
    if (!answered) modify.respond({ status: 488 });
  }

  /** The ACK to our 2xx for their re-INVITE; its body answers a body-less re-INVITE's offer. */
  onAck(cseq: number, body: string): void {
    if (this.pendingReinvite && this.pendingReinvite.cseq === cseq) {
      const { rt, onAck } = this.pendingReinvite;
      rt.stop();
      this.pendingReinvite = undefined;
      onAck?.(body.trim() ? body : undefined);
    }
  }

  /** Never rejects, and the dialog is destroyed whatever happens building or sending the BYE. */
  bye(reason = 'normal'): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    this.byeSent ??= (async () => {
      let req: SipRequest;
      let dest: Dest;
      try {
        req = this.newRequest('BYE', { reason: `Q.850;cause=16;text="${String(reason).replace(/["\r\n]/g, '')}"` });
        dest = this.dest();
      } catch (err) {
        this.engine.log.error({ sipCallId: this.callId, err: (err as Error).message }, 'cannot build BYE');
        return;
      } finally {
        this.destroy();
      }
      this.engine.log.info({ sipCallId: this.callId, reason }, 'sending BYE');
      try {
        const res = await this.engine.request(req, dest);
        this.engine.log.info({ sipCallId: this.callId, status: res.status }, 'BYE answered');
      } catch (err) {
        this.engine.log.warn({ sipCallId: this.callId, err: (err as Error).message }, 'BYE not answered');
      }
    })();
    return this.byeSent;
  }

  async refer(target: string, timeoutMs = 8000): Promise<void> {
    if (this.destroyed) throw new GatewayError('leg_closed', 'dialog is gone');
    const req = this.newRequest('REFER', { 'refer-to': `<${target}>`, 'referred-by': this.engine.contact });
    this.engine.log.info({ sipCallId: this.callId, target }, 'sending REFER');
    const res = await this.engine.request(req, this.dest(), timeoutMs);
    if (res.status >= 300)
      throw new GatewayError('upstream', `REFER rejected: ${res.status} ${res.reason}`, undefined, {
        details: { status: res.status },
      });
  }

  /**
   * RFC 4028 §7.4 refresh with us staying the refresher (we are this request's UAC: refresher=uac):
   * a body-less UPDATE when the far end allows UPDATE, else a re-INVITE with our current SDP.
   */
  async refresh(intervalSec: number, opts: { sdp: string; timeoutMs?: number }): Promise<string | undefined> {
    if (this.destroyed) throw new GatewayError('leg_closed', 'dialog is gone');
    const headers = { 'session-expires': `${intervalSec};refresher=uac`, supported: 'timer' };
    const useUpdate = allows(this.remoteAllow, 'UPDATE');
    this.engine.log.debug({ sipCallId: this.callId, method: useUpdate ? 'UPDATE' : 'INVITE' }, 'session refresh');
    const res = useUpdate
      ? await this.engine.request(this.newRequest('UPDATE', headers), this.dest(), opts.timeoutMs ?? 8000)
      : await this.reinvite(headers, opts.sdp, opts.timeoutMs ?? 8000);
    if (res.status >= 300) throw new GatewayError('upstream', `session refresh rejected: ${res.status} ${res.reason}`);
    return res.headers.get('session-expires') ?? res.headers.get('x');
  }

  /**
   * A re-INVITE from us (RFC 3261 §14.1) with our SDP as the offer; a 2xx is ACKed from the dialog
   * (and re-ACKed for each retransmitted 2xx for 64·T1). Answers within the same codec need no
   * action: the description we offer is the one in use.
   */
  private async reinvite(extra: Record<string, string>, sdp: string, timeoutMs: number): Promise<SipResponse> {
    if (this.reinviting || this.pendingReinvite)
      throw new GatewayError('invalid_state', 're-INVITE already in progress (glare)');
    this.reinviting = true;
    try {
      const req = this.newRequest('INVITE', { ...extra, allow: ALLOW, 'content-type': 'application/sdp' }, sdp);
      const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
      const branch = newBranch();
      const res = await this.engine.request(req, this.dest(), timeoutMs, branch);
      if (res.status < 300) {
        const ack = this.buildAck(cseq);
        this.engine.sendRaw(ack.buf, ack.dest);
        this.absorb2xx(branch, ack);
      }
      return res;
    } finally {
      this.reinviting = false;
    }
  }

  /**
   * After our re-INVITE's 2xx was ACKed: for 64·T1, a retransmission of that 2xx (our ACK was
   * lost) gets the same ACK again (RFC 3261 §13.2.2.4).
   */
  private absorb2xx(branch: string, ack: { buf: Buffer; dest: Dest }): void {
    const key = `${branch}|INVITE`;
    const tx: UacTx = {
      dest: ack.dest,
      onResponse: (res) => {
        if (res.status >= 200 && res.status < 300) this.engine.sendRaw(ack.buf, ack.dest);
      },
      dispose: () => clearTimeout(timer),
    };
    const timer = setTimeout(() => this.engine.forgetUacTx(key, tx), 64 * this.engine.t1);
    this.engine.addUacTx(key, tx);
  }

  private destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pendingReinvite?.rt.stop();
    this.engine.removeDialog(this);
    this.emit('destroyed');
  }
}
