import { GatewayError } from '../core/errors.js';
import { TypedEmitter } from '../core/typed-emitter.js';
import type { ModifyRequest, SipDialog, SipDialogEvents } from './engine.js';
import type { EmbeddedSipEngine } from './embedded.js';
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
} from './message.js';
import { ACCEPT, type Dest, isSips, newBranch, Retransmitter, SUPPORTED, type Transport } from './transactions.js';

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
}

/** UAS side (RFC 3261 §12.1.1): from the INVITE we answered. */
export function uasDialogInit(invite: SipRequest, src: Dest, localTag: string): DialogInit {
  const remoteUri = invite.headers.get('from')!;
  return {
    callId: invite.headers.get('call-id')!,
    localTag,
    localUri: invite.headers.get('to')!,
    remoteUri,
    remoteTarget: parseNameAddr(invite.headers.get('contact') ?? '')?.uri ?? parseNameAddr(remoteUri)!.uri,
    routeSet: invite.headers.getAll('record-route'),
    remoteSeq: parseCSeq(invite.headers.get('cseq'))!.seq,
    src,
    secure: isSips(invite),
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
  private pendingReinvite: { cseq: number; rt: Retransmitter } | undefined;

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
  buildAck(cseq: number): { buf: Buffer; dest: Dest } {
    const headers = new SipHeaders();
    const t = this.dest();
    headers.add('via', this.engine.viaFor(t.transport, newBranch()));
    headers.add('max-forwards', '70');
    for (const r of this.routeSet) headers.add('route', r);
    headers.add('from', /;\s*tag=/i.test(this.localUri) ? this.localUri : `${this.localUri};tag=${this.localTag}`);
    headers.add('to', this.remoteUri);
    headers.add('call-id', this.callId);
    headers.add('cseq', `${cseq} ACK`);
    headers.add('user-agent', this.engine.userAgent);
    return { buf: serialize({ kind: 'request', method: 'ACK', uri: this.remoteTarget, headers, body: '' }), dest: t };
  }

  /** Where in-dialog requests go: the first loose route, else the remote target; the source as fallback. */
  private dest(): Dest {
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
    headers.add('contact', this.engine.contactFor(this.src.transport, this.secure));
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
    if (isInvite && contact) this.remoteTarget = contact; // target refresh (RFC 3261 §12.2.2)
    const body = sdpOf(req);
    if (!body.ok)
      return void this.engine.reply(req, src, 415, `Unsupported Media Type (${body.reason})`, { accept: ACCEPT });
    let answered = false;
    const modify: ModifyRequest = {
      sdp: body.sdp,
      respond: (a) => {
        if (answered || this.destroyed) return;
        answered = true;
        if ('status' in a) return void this.engine.reply(req, src, a.status, a.reason, {}, this.localTag);
        const res = makeResponse(req, 200, 'OK', this.localTag);
        res.headers.set('contact', this.engine.contactFor(this.src.transport, this.secure));
        res.headers.set('supported', SUPPORTED.join(', '));
        for (const [k, v] of Object.entries(a.headers ?? {})) res.headers.set(k, v);
        // RFC 3311 §5.2: an UPDATE without an offer is answered without an answer (a session
        // refresh); a body-less re-INVITE gets our offer (RFC 3261 §14.2).
        if (isInvite || body.sdp) {
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
            this.pendingReinvite = undefined;
            this.engine.log.warn({ sipCallId: this.callId }, 'no ACK for re-INVITE 200');
          },
        );
        this.pendingReinvite = { cseq, rt };
      },
    };
    this.emit('modify', modify);
    if (!answered) modify.respond({ status: 488 });
  }

  onAck(cseq: number): void {
    if (this.pendingReinvite && this.pendingReinvite.cseq === cseq) {
      this.pendingReinvite.rt.stop();
      this.pendingReinvite = undefined;
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
    if (res.status >= 300) throw new GatewayError('upstream', `REFER rejected: ${res.status} ${res.reason}`);
  }

  async refresh(intervalSec: number, timeoutMs = 8000): Promise<void> {
    if (this.destroyed) throw new GatewayError('leg_closed', 'dialog is gone');
    const req = this.newRequest('UPDATE', {
      'session-expires': `${intervalSec};refresher=uas`,
      supported: 'timer',
    });
    const res = await this.engine.request(req, this.dest(), timeoutMs);
    if (res.status >= 300) throw new GatewayError('upstream', `session refresh rejected: ${res.status} ${res.reason}`);
  }

  private destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pendingReinvite?.rt.stop();
    this.engine.removeDialog(this);
    this.emit('destroyed');
  }
}
