import type { Logger } from '../core/logger.js';
import type { EmbeddedDialog } from './dialog.js';
import type { EmbeddedSipEngine } from './embedded.js';
import { type Admission, type FloodLimits, type InboundGuard } from './flood.js';
import {
  makeResponse,
  parseCSeq,
  parseVia,
  headerTokens,
  sdpOf,
  serialize,
  tagOf,
  validateRequest,
  type SipRequest,
  type SipResponse,
} from './message.js';
import {
  ACCEPT,
  ALLOW,
  type Dest,
  InviteTx,
  isWebSocket,
  mergeKey,
  stampVia,
  ServerTransactions,
  SUPPORTED,
} from './transactions.js';

/** What the inbound side shares with its engine (embedded.ts). */
export interface InboundContext {
  engine: EmbeddedSipEngine;
  /** The engine's dialogs by Call-ID + our tag (in-dialog requests go to them). */
  dialogs: ReadonlyMap<string, EmbeddedDialog>;
  guard: InboundGuard;
  limits: FloodLimits;
  log: Logger;
  /** A new INVITE passed every check and got its 100: hand it to the application. */
  offer: (inv: InviteTx) => void;
}

/** The SDP an ACK carries (a delayed offer's answer), '' when none or not usable. */
function ackSdp(req: SipRequest): string {
  const body = sdpOf(req);
  return body.ok ? (body.sdp ?? '') : '';
}

/**
 * The embedded engine's server side: every request we receive, from the stateless checks a stranger
 * meets first (flood.ts) through the server transactions that absorb retransmissions, to its
 * INVITE server transaction or dialog (RFC 3261 §17.2, §12.2.2). The engine (embedded.ts) owns the
 * sockets and the client side.
 */
export class InboundRequests {
  readonly serverTxs: ServerTransactions;
  private readonly invites = new Map<string, InviteTx>(); // by branch
  /** The same INVITEs by Call-ID + our To tag: the ACK for a 2xx is a new transaction (new branch). */
  private readonly invitesByTag = new Map<string, InviteTx>();
  /** Set by drain(): OPTIONS outside a dialog get 503 (dispatchers stop sending new calls). */
  draining = false;

  constructor(private readonly ctx: InboundContext) {
    this.serverTxs = new ServerTransactions(ctx.engine.t1);
  }

  /** INVITE server transactions held (pending or absorbing retransmissions of their final). */
  get inviteCount(): number {
    return this.invites.size;
  }

  /** Drop every server transaction and pending INVITE (the engine is stopping). */
  clear(): void {
    this.serverTxs.clear();
    for (const inv of this.invites.values()) inv.dispose();
    this.invites.clear();
    this.invitesByTag.clear();
  }

  forgetInvite(inv: InviteTx): void {
    if (this.invites.get(inv.branch) === inv) this.invites.delete(inv.branch);
    const byTag = `${inv.callId}|${inv.toTag}`;
    if (this.invitesByTag.get(byTag) === inv) this.invitesByTag.delete(byTag);
  }

  private isInDialog(req: SipRequest): boolean {
    const toTag = tagOf(req.headers.get('to'));
    return toTag !== undefined && this.ctx.dialogs.has(`${req.headers.get('call-id')}|${toTag}`);
  }

  /** A new out-of-dialog transaction: within the source's rate and the engine's caps? */
  private admitNew(req: SipRequest, address: string): Admission | undefined {
    const { guard, limits, dialogs } = this.ctx;
    const rate = guard.admitRate(req.method, address);
    if (!rate.ok) return rate;
    if (this.serverTxs.size >= limits.maxServerTransactions)
      return guard.overload(req.method, address, 'too many transactions');
    if (req.method === 'INVITE' && dialogs.size + this.invites.size >= limits.maxDialogs)
      return guard.overload(req.method, address, 'too many calls');
    return undefined;
  }

  /** One response, not remembered and never retransmitted (a flood gets no more from us than it sends). */
  private replyStateless(req: SipRequest, dest: Dest, admission: Admission): void {
    if (admission.ok || !admission.reply || req.method === 'ACK') return;
    if (!req.headers.has('via') || !req.headers.has('call-id') || !req.headers.has('cseq')) return;
    const { status, reason, retryAfter } = admission.reply;
    const res = makeResponse(req, status, reason);
    if (retryAfter !== undefined) res.headers.set('retry-after', String(retryAfter));
    res.headers.set('server', this.ctx.engine.userAgent);
    this.ctx.engine.sendRaw(serialize(res), dest);
  }

  private txKey(req: SipRequest): string | undefined {
    const branch = parseVia(req.headers.get('via')!)?.params.branch;
    if (!branch) return undefined;
    return `${branch}|${req.method}|${req.headers.get('call-id')}`;
  }

  /** Send a response and remember it on the request's server transaction. */
  respond(req: SipRequest, res: SipResponse, dest: Dest): void {
    res.headers.set('server', this.ctx.engine.userAgent);
    const buf = serialize(res);
    this.ctx.engine.sendRaw(buf, dest);
    if (req.method === 'ACK') return;
    const key = this.txKey(req);
    if (!key) return;
    const merge = tagOf(req.headers.get('to')) ? undefined : mergeKey(req);
    this.serverTxs.record(key, buf, dest, res.status >= 200, merge);
  }

  reply(
    req: SipRequest,
    dest: Dest,
    status: number,
    reason?: string,
    extra: Record<string, string> = {},
    toTag?: string,
  ): SipResponse {
    const res = makeResponse(req, status, reason, toTag);
    for (const [k, v] of Object.entries(extra)) res.headers.set(k, v);
    this.respond(req, res, dest);
    return res;
  }

  onRequest(req: SipRequest, from: Dest): void {
    let src = from;
    const inDialog = this.isInDialog(req);
    // Before anything else (even a 400): a stranger gets one stateless answer at most. WebSocket
    // peers passed the upgrade checks and are authenticated per request by the front (digest).
    const admission =
      inDialog || isWebSocket(from.transport) ? undefined : this.ctx.guard.admitUnknown(req.method, from.address);
    if (admission && !admission.ok) return this.replyStateless(req, from, admission);
    const invalid = validateRequest(req);
    if (invalid) {
      this.ctx.engine.counters.badRequests++;
      this.ctx.guard.sampler.warn(
        'malformed',
        { from: `${src.address}:${src.port}`, method: req.method, error: invalid },
        'malformed SIP request',
      );
      // We can only answer if we know where the response goes and what it belongs to.
      if (req.method !== 'ACK' && req.headers.has('via') && req.headers.has('call-id')) {
        const res = makeResponse(req, 400, `Bad Request (${invalid})`);
        res.headers.set('server', this.ctx.engine.userAgent);
        this.ctx.engine.sendRaw(serialize(res), src);
      }
      return;
    }
    const replyTo = stampVia(req, src);
    const key = req.method === 'ACK' ? undefined : this.txKey(req);
    const tx = key ? this.serverTxs.lookup(key) : undefined;
    if (tx) {
      if (tx.last) this.ctx.engine.sendRaw(tx.last, replyTo); // retransmitted request: resend our last response
      return;
    }
    if (!inDialog && req.method !== 'ACK') {
      const refused = this.admitNew(req, replyTo.address);
      if (refused) return this.replyStateless(req, replyTo, refused);
    }
    if (req.method !== 'ACK' && !tagOf(req.headers.get('to'))) {
      // RFC 3261 §16.3 / §8.2.2.2 for out-of-dialog requests: a request that has run out of hops,
      // or a copy of one we already handle arriving by another path (a fork merging back, a loop).
      if (req.headers.get('max-forwards') === '0' && req.method !== 'OPTIONS')
        return void this.reply(req, replyTo, 483);
      if (key && this.serverTxs.isMerged(mergeKey(req), key)) {
        this.ctx.log.warn({ sipCallId: req.headers.get('call-id'), method: req.method }, 'merged request: 482');
        return void this.reply(req, replyTo, 482);
      }
    }
    src = replyTo;
    const callId = req.headers.get('call-id')!;
    const toTag = tagOf(req.headers.get('to'));
    switch (req.method) {
      case 'ACK':
        return this.onAck(req, toTag);
      case 'CANCEL':
        return this.onCancel(req, src);
      case 'OPTIONS':
        if (toTag && !this.ctx.dialogs.has(`${callId}|${toTag}`)) return void this.reply(req, src, 481);
        if (!toTag && this.draining)
          return void this.reply(req, src, 503, 'Service Unavailable (draining)', { 'retry-after': '60' });
        return void this.reply(req, src, 200, undefined, {
          allow: ALLOW,
          accept: ACCEPT,
          supported: SUPPORTED.join(', '),
        });
      case 'INVITE':
        if (!toTag) return this.onInvite(req, src, from);
      // fall through: re-INVITE
      case 'BYE':
      case 'UPDATE':
      case 'NOTIFY':
      case 'INFO':
      case 'REFER': {
        const dlg = toTag ? this.ctx.dialogs.get(`${callId}|${toTag}`) : undefined;
        if (!dlg) return void this.reply(req, src, 481);
        return dlg.onRequest(req, src);
      }
      case 'PRACK': {
        // RFC 3262: in the early dialog of an INVITE we have not answered finally yet.
        const inv = toTag ? this.invitesByTag.get(`${callId}|${toTag}`) : undefined;
        if (inv) return inv.onPrack(req, src);
        return void this.reply(req, src, 481);
      }
      case 'REGISTER':
      case 'SUBSCRIBE':
      case 'MESSAGE':
      case 'PUBLISH':
        return void this.reply(req, src, 405, undefined, { allow: ALLOW });
      default:
        return void this.reply(req, src, 501);
    }
  }

  private onInvite(req: SipRequest, src: Dest, from: Dest): void {
    const branch = parseVia(req.headers.get('via')!)!.params.branch ?? '';
    const unsupported = headerTokens(req.headers, 'require').filter((r) => !SUPPORTED.includes(r));
    if (unsupported.length) return void this.reply(req, src, 420, undefined, { unsupported: unsupported.join(', ') });
    const body = sdpOf(req);
    if (!body.ok) return void this.reply(req, src, 415, `Unsupported Media Type (${body.reason})`, { accept: ACCEPT });
    const inv = new InviteTx(this.ctx.engine, req, src, branch, from);
    this.invites.set(branch, inv);
    this.invitesByTag.set(`${inv.callId}|${inv.toTag}`, inv);
    this.reply(req, src, 100);
    this.ctx.offer(inv);
  }

  /**
   * An ACK, matched through maps (never a scan): for a non-2xx final, to the INVITE server
   * transaction by branch (RFC 3261 §17.2.3); for a 2xx, to the INVITE awaiting it by Call-ID and
   * our To tag, else to the dialog (a re-INVITE's 2xx). An ACK for an INVITE with no final
   * response yet (e.g. for a 482 sent to a merged copy) is nobody's.
   */
  private onAck(req: SipRequest, toTag: string | undefined): void {
    const callId = req.headers.get('call-id')!;
    const cseq = parseCSeq(req.headers.get('cseq'))!.seq;
    const branch = parseVia(req.headers.get('via')!)!.params.branch ?? '';
    const byBranch = this.invites.get(branch);
    const inv =
      byBranch?.callId === callId ? byBranch : toTag ? this.invitesByTag.get(`${callId}|${toTag}`) : undefined;
    if (inv && inv.cseq === cseq && inv.final) return inv.onAck(ackSdp(req));
    const dlg = toTag ? this.ctx.dialogs.get(`${callId}|${toTag}`) : undefined;
    dlg?.onAck(cseq, ackSdp(req));
  }

  private onCancel(req: SipRequest, src: Dest): void {
    const branch = parseVia(req.headers.get('via')!)!.params.branch ?? '';
    const inv = this.invites.get(branch);
    if (!inv || inv.callId !== req.headers.get('call-id')) return void this.reply(req, src, 481);
    this.reply(req, src, 200, undefined, {}, inv.toTag);
    inv.onCancel();
  }
}
