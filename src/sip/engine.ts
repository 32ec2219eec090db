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
}

export type SipEngineEvents = {
  invite: [invite: IncomingInvite];
  /** Something went wrong that an operator should see (parse errors are logged by the engine). */
  error: [err: Error];
};

export interface SourceAddress {
  address: string;
  port: number;
  transport: 'udp' | 'tcp' | 'tls';
}

export type IncomingInviteEvents = {
  /** The caller cancelled before we answered; the engine already sent 200 (CANCEL) and 487 (INVITE). */
  cancel: [];
};

/** A new INVITE (outside any dialog) the front must answer or reject exactly once. */
export interface IncomingInvite extends TypedEmitter<IncomingInviteEvents> {
  readonly callId: string;
  readonly source: SourceAddress;
  readonly requestUri: string;
  /** From / To header values as received. */
  readonly from: string;
  readonly to: string;
  readonly sdp: string | undefined;
  header(name: string): string | undefined;
  /** Every header in received order (engines that keep them; names in lower case). */
  headerList?(): { name: string; value: string }[];
  readonly cancelled: boolean;
  /** 18x without SDP. */
  progress(status: 180 | 183): void;
  reject(status: number, reason?: string, headers?: Record<string, string>): void;
  /**
   * 200 OK with our SDP; resolves with the dialog once the ACK arrives. Rejects when no ACK comes
   * within 64·T1 (the engine then sends BYE itself) or when the INVITE was cancelled.
   */
  answer(sdp: string, headers?: Record<string, string>): Promise<SipDialog>;
}

/** The far end's in-dialog offer; `respond` answers it once (sdp = 200 OK, or a status to reject). */
export interface ModifyRequest {
  sdp: string | undefined;
  respond(answer: { sdp: string; headers?: Record<string, string> } | { status: number; reason?: string }): void;
}

export type SipDialogEvents = {
  /** The far end sent BYE (already answered 200). */
  bye: [];
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
   * RFC 4028 refresh when we are the refresher: an UPDATE without a body (RFC 3311) carrying
   * Session-Expires. Resolves on 2xx, rejects otherwise. Engines that cannot send it omit it.
   */
  refresh?(intervalSec: number, timeoutMs?: number): Promise<void>;
}
