/**
 * The slice of drachtio-srf the drachtio engine drives, typed here (drachtio-srf ships loose
 * typings) so the mapping stays checked and a fake can stand in where the real server cannot
 * provoke a case.
 */
export interface SrfRequestLike {
  method: string;
  uri: string;
  body: string;
  source_address: string;
  source_port: string | number;
  /** Transport the message came over: udp, tcp, tls, ws or wss. */
  protocol: string;
  get(name: string): string | undefined;
  has(name: string): boolean;
  on(event: 'cancel', fn: () => void): void;
}

export interface SrfResponseLike {
  send(status: number, reasonOrOpts?: string | object, opts?: object): void;
  /**
   * A provisional with `Require: 100rel` goes out reliably (drachtio-server adds RSeq and resends
   * it); `onPrack` runs when its PRACK arrives (drachtio-srf then answers the PRACK 200 itself).
   */
  send(
    status: number,
    opts: object,
    callback: (err: Error | null) => void,
    onPrack: (prack: SrfRequestLike) => void,
  ): void;
  finalResponseSent?: boolean;
  /** drachtio-srf's Response emits 'end' once a final response went out. */
  once?(event: 'end', fn: () => void): unknown;
}

/** drachtio-srf's SipError: a final non-2xx response to a request we sent. */
export interface SrfSipError extends Error {
  status?: number;
  reason?: string;
}

/** An INVITE we sent (createUAC's cbRequest): cancellable until its final response. */
export interface SrfSentRequest {
  cancel(opts: { headers?: Record<string, string> }, cb?: (err: unknown) => void): void;
  get(name: string): string | undefined;
}

export interface SrfProvisional {
  status: number;
  reason?: string;
}

export type DialogEvent = 'destroy' | 'ack';

export interface DialogLike {
  /** drachtio-server's dialog id (stackDialogId): in-dialog requests are sent by it. */
  readonly id: string;
  sip: { callId: string };
  /** The far end's SDP (UAC dialogs: from the 2xx). */
  remote: { sdp: string };
  /** The control connection this dialog's requests go over. */
  readonly socket?: { destroyed?: boolean };
  on(event: 'destroy', fn: (msg?: unknown, reason?: string) => void): unknown;
  /** The ACK of the 2xx to the initial INVITE or to a re-INVITE (its body: a delayed offer's answer). */
  on(event: 'ack', fn: (ack?: SrfRequestLike) => void): unknown;
  on(event: 'modify' | 'update', fn: (req: SrfRequestLike, res: SrfResponseLike) => void): unknown;
  removeAllListeners(event?: string): unknown;
  removeListener(event: 'ack', fn: (ack?: SrfRequestLike) => void): unknown;
  destroy(opts?: { headers: Record<string, string> }): Promise<unknown>;
  request(opts: {
    method: string;
    headers?: Record<string, string>;
    body?: string;
  }): Promise<{ status: number; reason?: string }>;
}

export interface SrfConnectOptions {
  host: string;
  port: number;
  secret: string;
  /** drachtio-srf's own reconnect backoff (150 ms × 1.7 per attempt); retryMaxDelay caps it. */
  reconnect?: { retryMaxDelay: number };
}

export interface SrfLike {
  connect(opts: SrfConnectOptions): unknown;
  disconnect(): void;
  on(event: 'connect', fn: (err: Error | null, hostPort: string) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  /** The control connection closed (drachtio-srf emits no 'disconnect'). */
  on(event: 'close', fn: () => void): unknown;
  on(event: 'reconnecting', fn: (info: { delay: number; attempt: number }) => void): unknown;
  invite(fn: (req: SrfRequestLike, res: SrfResponseLike) => void): void;
  options(fn: (req: SrfRequestLike, res: SrfResponseLike) => void): void;
  createUAS(
    req: SrfRequestLike,
    res: SrfResponseLike,
    opts: { localSdp: string; headers?: Record<string, string> },
  ): Promise<DialogLike>;
  createUAC(
    uri: string,
    opts: { localSdp: string; headers?: Record<string, string> },
    progress?: {
      cbRequest?: (err: unknown, req: SrfSentRequest) => void;
      cbProvisional?: (res: SrfProvisional) => void;
    },
  ): Promise<DialogLike>;
  /**
   * A request by drachtio-server dialog id over the current control connection (drachtio-srf's
   * agent): a dialog created before a reconnect still holds the dead socket.
   */
  requestInDialog?(stackDialogId: string, method: string, headers: Record<string, string>): Promise<number>;
}

/** drachtio protocol names → the transports the front knows (ws rides TCP, wss TLS). */
export function transportOf(protocol: string | undefined): 'udp' | 'tcp' | 'tls' {
  const p = (protocol ?? '').toLowerCase();
  if (p === 'tls' || p === 'wss') return 'tls';
  if (p === 'tcp' || p === 'ws') return 'tcp';
  return 'udp';
}
