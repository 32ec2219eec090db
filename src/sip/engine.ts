import type { HangupReason } from '../core/media-leg.js';
import type { TypedEmitter } from '../core/typed-emitter.js';

/**
 * What the SIP front needs from a SIP stack: incoming INVITEs it can answer or reject, and the
 * resulting dialogs (BYE, re-INVITE, REFER). Two engines implement it: the embedded UDP stack
 * (src/sip/embedded.ts and its transactions/dialog modules, the default: no other server) and drachtio (src/sip/drachtio/, a
 * drachtio-server does the SIP and we drive it over its control socket). The front (call
 * policy, trunks, media) is the same for both.
 */
export interface SipEngine extends TypedEmitter<SipEngineEvents> {
  readonly name: 'embedded' | 'drachtio';
  start(): Promise<void>;
  stop(): Promise<void>;
  describe(): Record<string, unknown>;
  ready(): boolean;
  /**
   * Whether its dialogs can send RFC 4028 session refreshes (SipDialog.refresh). Without it the
   * front never makes the gateway the refresher: it leaves the job to the carrier or declines the timer.
   */
  readonly canRefresh: boolean;
  /**
   * Who runs RFC 4028 session timers: the front (default) or the engine's own SIP stack
   * (drachtio-server refreshes and expires sessions itself; the front must not do it twice).
   */
  readonly sessionTimers?: 'front' | 'engine';
  /**
   * Draining: out-of-dialog OPTIONS are answered 503, so a dispatcher probing us (Kamailio
   * ds_ping_interval) stops sending new calls while the calls in progress finish.
   */
  drain?(): void;
}

export type SipEngineEvents = {
  invite: [invite: IncomingInvite];
  /** Something went wrong that an operator should see (parse errors are logged by the engine). */
  error: [err: Error];
};

export interface SourceAddress {
  address: string;
  port: number;
  transport: 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';
}

export type IncomingInviteEvents = {
  /** The caller cancelled before we answered; the engine already sent 200 (CANCEL) and 487 (INVITE). */
  cancel: [];
  /**
   * The engine gave up on the INVITE itself and sent a final error (e.g. 500: a reliable 18x was
   * never PRACKed within 64·T1, RFC 3262 §3); the front ends the call.
   */
  failed: [why: string];
};

/** A new INVITE (outside any dialog) the front must answer or reject exactly once. */
export interface IncomingInvite extends TypedEmitter<IncomingInviteEvents> {
  readonly callId: string;
  readonly source: SourceAddress;
  readonly requestUri: string;
  /** From / To header values as received. */
  readonly from: string;
  readonly to: string;
  /** The offer; undefined for a delayed offer (RFC 3261 §13.3.1: ours goes in the 200, theirs in the ACK). */
  readonly sdp: string | undefined;
  /** The SDP the confirming ACK carried (the far end's answer to a delayed offer); set once answer() resolves. */
  readonly ackSdp?: string;
  header(name: string): string | undefined;
  /** Every header in received order (engines that keep them; names in lower case). */
  headerList?(): { name: string; value: string }[];
  readonly cancelled: boolean;
  /**
   * 18x without SDP. Sent reliably (RFC 3262: RSeq, retransmitted until PRACK) when the INVITE had
   * Require or Supported 100rel and the engine supports it; answer() then waits for the PRACK.
   */
  progress(status: 180 | 183): void;
  reject(status: number, reason?: string, headers?: Record<string, string>): void;
  /**
   * 200 OK with our SDP; resolves with the dialog once the ACK arrives. Rejects when no ACK comes
   * within 64·T1 (the engine then sends BYE itself) or when the INVITE was cancelled.
   */
  answer(sdp: string, headers?: Record<string, string>): Promise<SipDialog>;
}

/**
 * The far end's in-dialog re-INVITE or UPDATE; `respond` answers it once (200 with or without SDP,
 * or a status to reject). A body-less re-INVITE asks for our offer in the 200: its answer comes in
 * the ACK, handed to `onAck` (undefined when the ACK had no body or never came).
 */
export interface ModifyRequest {
  /** Engines that do not say are treated as INVITE. */
  method?: 'INVITE' | 'UPDATE';
  sdp: string | undefined;
  /** A header of the request (Session-Expires, Supported...); engines that cannot read them omit it. */
  header?(name: string): string | undefined;
  respond(
    answer:
      | { sdp?: string; headers?: Record<string, string>; onAck?: (sdp: string | undefined) => void }
      | { status: number; reason?: string; headers?: Record<string, string> },
  ): void;
}

export type SipDialogEvents = {
  /**
   * The far end sent BYE (already answered 200). An engine that ends a dialog on its own (ACK or
   * session timeout, lost link) passes why; without a reason it is the far end's hangup.
   */
  bye: [reason?: HangupReason];
  /** re-INVITE or UPDATE (hold/unhold/session refresh). */
  modify: [req: ModifyRequest];
  /** The dialog is gone (after BYE either way, or a failure). */
  destroyed: [];
};

export interface SipDialog extends TypedEmitter<SipDialogEvents> {
  readonly callId: string;
  /** Send BYE; resolves on its final response or timeout (never rejects: the call is over either way). */
  bye(reason?: string): Promise<void>;
  /** Send REFER with Refer-To; resolves on 2xx (202), rejects on error response or timeout. */
  refer(target: string, timeoutMs?: number): Promise<void>;
  /**
   * RFC 4028 refresh when we are the refresher, carrying Session-Expires (refresher=uac: us): an
   * UPDATE without a body (RFC 3311) when the far end allows UPDATE, else a re-INVITE with `sdp`
   * (our current description). Resolves with the 2xx's Session-Expires value, rejects otherwise.
   * Engines that cannot send it omit it (the front then never makes us the refresher).
   */
  refresh?(intervalSec: number, opts: { sdp: string; timeoutMs?: number }): Promise<string | undefined>;
}
