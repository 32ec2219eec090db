import { GatewayError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { SipDialog } from '../engine.js';
import { parseUri } from '../message.js';
import type { InviteOptions } from '../uac.js';
import { DrachtioDialog, type DialogHost } from './dialog.js';
import type { SrfSentRequest, SrfSipError } from './srf-types.js';

/** After our CANCEL, drachtio-server needs at most 64·T1 to end the INVITE transaction. */
const DRACHTIO_TX_SLACK_MS = 40_000;

export interface PlacedInvite {
  dialog: SipDialog;
  /** The far end's SDP answer from the 2xx. */
  sdp: string;
}

/**
 * Our From: drachtio-server replaces a `localhost` host with the address of the SIP contact it
 * sends from, so the far end sees a routable identity without us knowing drachtio's address.
 */
function fromHeader(from: string, secure: boolean): string {
  if (/^(sips?|tel):|</i.test(from)) return from.includes('<') ? from : `<${from}>`;
  return `<${secure ? 'sips' : 'sip'}:${from}@localhost>`;
}

/**
 * An INVITE through drachtio-server with drachtio-srf's createUAC: drachtio-server runs the client
 * transaction (retransmissions, ACK, TCP/TLS by the URI's transport — a `transport=tls` or `sips:`
 * target needs a TLS contact in drachtio's config), we add the ring timeout and CANCEL when the
 * call ends while it rings.
 */
export async function placeInvite(host: DialogHost, opts: InviteOptions, log: Logger): Promise<PlacedInvite> {
  const { callId } = opts;
  const target = parseUri(opts.uri);
  if (!target || target.scheme === 'tel' || !target.host)
    throw new GatewayError('config_invalid', `not a SIP URI: ${opts.uri}`, callId);
  if (!host.linkUp())
    throw new GatewayError('upstream', 'drachtio-server link is down: cannot place the INVITE', callId);
  if (opts.signal?.aborted) throw new GatewayError('leg_closed', 'dial aborted before the INVITE', callId);
  let uri = opts.uri;
  if (opts.transport && !/;transport=/i.test(uri)) uri += `;transport=${opts.transport}`;
  const headers: Record<string, string> = {
    From: fromHeader(opts.from, target.scheme === 'sips'),
    To: opts.to ?? `<${opts.uri}>`,
    ...opts.headers,
  };

  let sent: SrfSentRequest | undefined;
  let giveUp: GatewayError | undefined;
  const cancel = (why: GatewayError) => {
    if (giveUp) return;
    giveUp = why;
    sent?.cancel(cancelOpts(), () => {});
  };
  const cancelOpts = () => {
    const reason = opts.cancelReason?.();
    return reason ? { headers: { Reason: reason } } : {};
  };
  const timer = setTimeout(
    () => cancel(new GatewayError('timeout', `not answered within ${opts.timeoutMs} ms (CANCEL sent)`, callId)),
    opts.timeoutMs,
  );
  const onAbort = () => cancel(new GatewayError('leg_closed', 'dial aborted (CANCEL sent)', callId));
  opts.signal?.addEventListener('abort', onAbort);
  // drachtio-server ends the transaction itself (timer B/C, 487 after our CANCEL); this only
  // guards against an answer that can never come because the control connection died mid-dial.
  let deadline: NodeJS.Timeout | undefined;
  let pastDeadline = false;
  const lost = new Promise<never>((_, reject) => {
    deadline = setTimeout(() => {
      pastDeadline = true;
      reject(new GatewayError('timeout', `no final answer from drachtio-server for ${opts.uri}`, callId));
    }, opts.timeoutMs + DRACHTIO_TX_SLACK_MS);
  });
  try {
    const placed = host.srf.createUAC(
      uri,
      { localSdp: opts.sdp, headers },
      {
        cbRequest: (err, req) => {
          if (err) return;
          sent = req;
          if (giveUp) req.cancel(cancelOpts(), () => {}); // gave up before drachtio-server confirmed the INVITE
        },
        cbProvisional: (res) => opts.onProvisional?.(res.status, res.reason ?? ''),
      },
    );
    // An answer after we gave up: hang that dialog up rather than leave it in drachtio-server.
    placed.then((d) => pastDeadline && void d.destroy().catch(() => {})).catch(() => {});
    const dialog = await Promise.race([placed, lost]);
    const sipCallId = dialog.sip.callId;
    const ours = new DrachtioDialog(dialog, sipCallId, host, log.child({ callId, sipCallId }));
    if (giveUp) {
      // 200 crossed our CANCEL: the call is over, BYE the dialog drachtio-server confirmed.
      void ours.bye('call_ended');
      throw giveUp;
    }
    return { dialog: ours, sdp: dialog.remote.sdp };
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    if (giveUp) throw giveUp;
    const e = err as SrfSipError;
    if (typeof e.status === 'number') {
      const text = `${e.status} ${e.reason ?? ''}`.trim();
      log.info({ callId, uri, status: e.status, reason: e.reason }, 'INVITE refused');
      throw new GatewayError('upstream', `INVITE to ${opts.uri} refused: ${text}`, callId, {
        details: { status: e.status, reason: e.reason },
      });
    }
    throw new GatewayError('upstream', `INVITE to ${opts.uri} failed in drachtio-server: ${e.message}`, callId, {
      cause: err,
    });
  } finally {
    clearTimeout(timer);
    clearTimeout(deadline);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
