import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { metaSdpProblems } from './meta-sdp.js';
import { callsEnvelope, deliverWebhook } from './webhook-body.js';

/** One request the gateway made to the Graph API, with what was wrong with it (if anything). */
export interface GraphRequest {
  at: number;
  /** performance.now() at arrival, comparable with the user peer's arrival times. */
  perfAt: number;
  path: string;
  auth: string | undefined;
  action: string;
  body: Record<string, unknown>;
  problems: string[];
}

export interface InjectedError {
  status: number;
  code: number;
  message: string;
  details?: string;
  /** How many times to fail before succeeding again (default 1). */
  times?: number;
}

/** Where a call stands at "Meta", as far as the gateway's Graph actions are concerned. */
export type StubCallState = 'offered' | 'pre_accepted' | 'accepted' | 'ringing' | 'rejected' | 'terminated';

/** One call as "Meta" knows it. */
export interface StubCall {
  state: StubCallState;
  phoneNumberId: string;
  direction: 'USER_INITIATED' | 'BUSINESS_INITIATED';
  /** The WhatsApp user's number and the business's display number (digits). */
  user: string;
  business: string;
  /** The user's offer (user-initiated calls): the answer is checked against it (RFC 3264). */
  offerSdp?: string;
  /** When the call was answered (ms): a terminate webhook then says COMPLETED with a duration. */
  answeredAt?: number;
  /** `biz_opaque_callback_data` of the business's connect/accept, echoed in webhooks. */
  opaque?: string;
}

/** A webhook "Meta" sent the business (the terminate after a business hang-up). */
export interface SentWebhook {
  at: number;
  waCallId: string;
  body: Record<string, unknown>;
  /** The gateway's HTTP status, or the delivery error. */
  result: number | string;
}

/** How the stand-in misbehaves on the next request(s) of one action, after acting on it. */
export interface Fault {
  /** Answer this late (the action has already taken effect). */
  delayMs?: number;
  /** Act on the request, then drop the connection without answering. */
  loseResponse?: boolean;
  times?: number;
}

interface MetaErrorBody {
  status: number;
  message: string;
  type: string;
  code: number;
  subcode?: number;
  details?: string;
}

/** Graph's answer to a bad or missing access token (Graph API error handling guide). */
const BAD_TOKEN: MetaErrorBody = {
  status: 401,
  message: 'Invalid OAuth access token - Cannot parse access token',
  type: 'OAuthException',
  code: 190,
};

/** Graph's answer to a POST on an object id the app cannot see (code 100, subcode 33). */
const unknownObject = (id: string): MetaErrorBody => ({
  status: 400,
  message: `Unsupported post request. Object with ID '${id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api`,
  type: 'GraphMethodException',
  code: 100,
  subcode: 33,
});

/** Meta's calling error for a bad parameter: 400, code 100, what was wrong in error_data.details. */
const invalidParameter = (details: string): MetaErrorBody => ({
  status: 400,
  message: '(#100) Invalid parameter',
  type: 'OAuthException',
  code: 100,
  details,
});

/** Which states each business action may be taken from (pre_accept is optional: Meta's guide). */
const ALLOWED_FROM: Record<string, StubCallState[]> = {
  pre_accept: ['offered'],
  accept: ['offered', 'pre_accepted'],
  reject: ['offered', 'pre_accepted'],
  terminate: ['offered', 'pre_accepted', 'accepted', 'ringing'],
};
const NEXT_STATE: Record<string, StubCallState> = {
  pre_accept: 'pre_accepted',
  accept: 'accepted',
  reject: 'rejected',
  terminate: 'terminated',
};

type Waiter = { action: string; callId: string | undefined; resolve: (r: GraphRequest) => void };

/**
 * Stand-in for graph.facebook.com's calling endpoint: POST /<version>/<phone-number-id>/calls.
 * Records every request and answers like Meta: 401/190 for a bad token, 400/100/33 for a phone
 * number id the app does not own, 400/100 with `error_data.details` for a bad body or SDP (checked
 * by meta-sdp.ts, independently of the gateway's SDP code) and for an action on an unknown call or
 * a call in the wrong state (a second terminate, accept after terminate...). After a business
 * `terminate` it sends the business the signed `terminate` webhook, as Meta does. Errors and faults
 * (late or lost responses) can be injected per action.
 */
export class GraphStub {
  readonly requests: GraphRequest[] = [];
  readonly calls = new Map<string, StubCall>();
  /** Webhooks sent to the business. */
  readonly webhooks: SentWebhook[] = [];
  /** Business numbers (phone-number IDs) this "app" may act for. */
  readonly numbers: Set<string>;
  readonly errors = new Map<string, InjectedError>();
  private readonly faults = new Map<string, Fault>();
  private readonly holds = new Map<string, Promise<void>>();
  /**
   * Pending waitFor() calls. A list rather than an EventEmitter listener each: many calls set up
   * at once (load tests, concurrent users) each wait here, which tripped MaxListenersExceeded.
   */
  private readonly waiters = new Set<Waiter>();
  private readonly webhookWaiters = new Set<(w: SentWebhook) => void>();
  /** Whether webhooks echo `biz_opaque_callback_data` (Meta's docs say they do; tests may turn it off). */
  echoOpaque = true;
  private webhookTarget: { url: string; appSecret: string } | undefined;
  private server: Server | undefined;

  constructor(
    readonly accessToken = 'test-access-token',
    readonly phoneNumberId = '106540352242922',
    readonly version = 'v23.0',
    otherNumbers: string[] = [],
    readonly businessNumber = '15550783881',
  ) {
    this.numbers = new Set([phoneNumberId, ...otherNumbers]);
  }

  /** Where "Meta" delivers webhooks it originates (the terminate after a business hang-up). */
  sendWebhooksTo(url: string, appSecret: string): void {
    this.webhookTarget = { url, appSecret };
  }

  /** A user's call reached "Meta" (the user posts the connect webhook): Graph actions may name it. */
  offered(
    waCallId: string,
    phoneNumberId = this.phoneNumberId,
    info: { user?: string; business?: string; sdp?: string } = {},
  ): void {
    this.calls.set(waCallId, {
      state: 'offered',
      phoneNumberId,
      direction: 'USER_INITIATED',
      user: info.user ?? '',
      business: info.business ?? this.businessNumber,
      offerSdp: info.sdp,
    });
  }

  /** The user picked up a business-initiated call. */
  answered(waCallId: string): void {
    const c = this.calls.get(waCallId);
    if (c) {
      c.state = 'accepted';
      c.answeredAt = Date.now();
    }
  }

  /** The user hung up (or rejected): the call is over at "Meta". */
  userEnded(waCallId: string): void {
    const c = this.calls.get(waCallId);
    if (c) c.state = c.state === 'ringing' ? 'rejected' : 'terminated';
  }

  fault(action: string, f: Fault): void {
    this.faults.set(action, { times: 1, ...f });
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${(this.server?.address() as AddressInfo).port}`;
  }

  async start(): Promise<void> {
    const app = express();
    app.use(express.json({ limit: '1mb' }));
    app.post('/:version/:phone/calls', (req, res) => this.handle(req, res));
    this.server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections();
  }

  /** Make the next call(s) with `action` fail with Meta's error shape. */
  inject(action: string, err: InjectedError): void {
    this.errors.set(action, { times: 1, ...err });
  }

  byAction(action: string, callId?: string): GraphRequest[] {
    return this.requests.filter((r) => r.action === action && (!callId || r.body.call_id === callId));
  }

  /** Resolves with the first request of `action` for `callId` (or any), or rejects after timeoutMs. */
  waitFor(action: string, callId?: string, timeoutMs = 10_000): Promise<GraphRequest> {
    const have = this.byAction(action, callId)[0];
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        action,
        callId,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`Graph stub: no ${action} for ${callId ?? 'any call'} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Resolves with the first webhook "Meta" sent for `waCallId`, once its delivery finished. */
  waitForWebhook(waCallId: string, timeoutMs = 10_000): Promise<SentWebhook> {
    const hit = this.webhooks.find((w) => w.waCallId === waCallId);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.webhookWaiters.delete(on);
        reject(new Error(`Graph stub: no webhook sent for ${waCallId} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (w: SentWebhook) => {
        if (w.waCallId !== waCallId) return;
        clearTimeout(timer);
        this.webhookWaiters.delete(on);
        resolve(w);
      };
      this.webhookWaiters.add(on);
    });
  }

  /** Hold the next request with `action` until the returned release() is called (in-flight races). */
  hold(action: string): () => void {
    let release!: () => void;
    this.holds.set(action, new Promise<void>((r) => (release = r)));
    return () => release();
  }

  /** Actions whose request arrived and is being held (a test releases it once its race is set up). */
  readonly heldNow = new Set<string>();

  private notifyWaiters(record: GraphRequest): void {
    for (const w of [...this.waiters]) {
      if (w.action === record.action && (!w.callId || record.body.call_id === w.callId)) {
        this.waiters.delete(w);
        w.resolve(record);
      }
    }
  }

  private handle(req: express.Request, res: express.Response): void {
    const heldAction = String((req.body as Record<string, unknown> | undefined)?.action ?? '');
    const held = this.holds.get(heldAction);
    if (held) {
      this.holds.delete(heldAction);
      this.heldNow.add(heldAction);
      void held.then(() => {
        this.heldNow.delete(heldAction);
        this.handle(req, res);
      });
      return;
    }
    const body = (req.body ?? {}) as Record<string, unknown>;
    const action = String(body.action ?? '');
    const phone = String(req.params.phone);
    const problems: string[] = [];
    let refusal: MetaErrorBody | undefined;
    if (req.get('authorization') !== `Bearer ${this.accessToken}`) {
      problems.push('bad Authorization header');
      refusal = BAD_TOKEN;
    } else if (!this.numbers.has(phone)) {
      problems.push(`phone number id ${phone}`);
      refusal = unknownObject(phone);
    }
    if (req.params.version !== this.version) problems.push(`version ${req.params.version}`);
    if (body.messaging_product !== 'whatsapp') problems.push('messaging_product must be "whatsapp"');
    const session = body.session as { sdp_type?: unknown; sdp?: unknown } | undefined;
    const callId = typeof body.call_id === 'string' ? body.call_id : undefined;
    switch (action) {
      case 'pre_accept':
      case 'accept':
        if (!callId) problems.push('call_id missing');
        if (session?.sdp_type !== 'answer')
          problems.push(`session.sdp_type must be "answer", got ${String(session?.sdp_type)}`);
        problems.push(
          ...metaSdpProblems(session?.sdp, 'answer', callId ? this.calls.get(callId)?.offerSdp : undefined),
        );
        break;
      case 'reject':
      case 'terminate':
        if (!callId) problems.push('call_id missing');
        break;
      case 'connect':
        if (typeof body.to !== 'string') problems.push('to missing');
        if (session?.sdp_type !== 'offer')
          problems.push(`session.sdp_type must be "offer", got ${String(session?.sdp_type)}`);
        problems.push(...metaSdpProblems(session?.sdp, 'offer'));
        break;
      default:
        problems.push(`unknown action "${action}"`);
    }
    const record: GraphRequest = {
      at: Date.now(),
      perfAt: performance.now(),
      path: req.path,
      auth: req.get('authorization'),
      action,
      body,
      problems,
    };
    this.requests.push(record);
    const injected = this.errors.get(action);
    if (injected) {
      if (!injected.times || --injected.times <= 0) this.errors.delete(action);
      return this.fail(res, record, {
        ...injected,
        type: 'OAuthException',
        details: injected.details ?? injected.message,
      });
    }
    if (refusal) return this.fail(res, record, refusal);
    if (problems.length) return this.fail(res, record, invalidParameter(problems.join('; ')));
    const stateError = this.transition(action, body, phone);
    if (stateError) return this.fail(res, record, invalidParameter(stateError));
    const fault = this.faults.get(action);
    if (fault && (!fault.times || --fault.times <= 0)) this.faults.delete(action);
    const reply = () => {
      if (fault?.loseResponse) {
        req.socket.destroy();
      } else if (action === 'connect') {
        res.json({ messaging_product: 'whatsapp', calls: [{ id: record.body.assigned_call_id }] });
      } else {
        res.json({ messaging_product: 'whatsapp', success: true });
      }
      this.notifyWaiters(record);
      // Meta tells the business how the call ended, whoever ended it (also when our response was lost).
      if (action === 'terminate') setImmediate(() => void this.sendTerminate(String(body.call_id)));
    };
    if (fault?.delayMs) setTimeout(reply, fault.delayMs);
    else reply();
  }

  /**
   * Apply an action to the call's state; the reason Meta refuses it when the call is unknown or
   * past the action. Meta documents code 100 "Invalid parameter" with the reason in
   * error_data.details for refused calling requests; no calling-specific code is documented for a
   * call in the wrong state, so none is invented here.
   */
  private transition(action: string, body: Record<string, unknown>, phone: string): string | undefined {
    const opaque = typeof body.biz_opaque_callback_data === 'string' ? body.biz_opaque_callback_data : undefined;
    if (action === 'connect') {
      const id = `wacid.${randomBytes(12).toString('base64url')}`;
      body.assigned_call_id = id;
      this.calls.set(id, {
        state: 'ringing',
        phoneNumberId: phone,
        direction: 'BUSINESS_INITIATED',
        user: String(body.to),
        business: this.businessNumber,
        opaque,
      });
      return undefined;
    }
    const id = String(body.call_id);
    const call = this.calls.get(id);
    if (!call || call.phoneNumberId !== phone) return `Call ${id} not found`;
    if (!ALLOWED_FROM[action]?.includes(call.state)) return `Cannot ${action} call ${id}: call is ${call.state}`;
    if (action === 'accept' && call.direction !== 'USER_INITIATED') return `Cannot accept call ${id}: not a user call`;
    call.state = NEXT_STATE[action]!;
    if (action === 'accept') {
      call.answeredAt = Date.now();
      call.opaque = opaque ?? call.opaque;
    }
    return undefined;
  }

  /** The `terminate` webhook that follows a business hang-up, signed with the app secret. */
  private async sendTerminate(waCallId: string): Promise<void> {
    const call = this.calls.get(waCallId);
    if (!call || !this.webhookTarget) return;
    const now = Date.now();
    const answered = call.answeredAt !== undefined;
    const userInitiated = call.direction === 'USER_INITIATED';
    const body = callsEnvelope(call.phoneNumberId, call.business, [
      {
        id: waCallId,
        from: userInitiated ? call.user : call.business,
        to: userInitiated ? call.business : call.user,
        event: 'terminate',
        direction: call.direction,
        timestamp: String(Math.floor(now / 1000)),
        status: answered ? 'COMPLETED' : 'FAILED',
        ...(answered
          ? {
              start_time: String(Math.floor(call.answeredAt! / 1000)),
              end_time: String(Math.floor(now / 1000)),
              duration: Math.round((now - call.answeredAt!) / 1000),
            }
          : {}),
        ...(call.opaque && this.echoOpaque ? { biz_opaque_callback_data: call.opaque } : {}),
      },
    ]);
    let result: number | string;
    try {
      result = await deliverWebhook(this.webhookTarget.url, this.webhookTarget.appSecret, body);
    } catch (err) {
      result = (err as Error).message;
    }
    const sent = { at: now, waCallId, body, result };
    this.webhooks.push(sent);
    for (const w of [...this.webhookWaiters]) w(sent);
  }

  private fail(res: express.Response, record: GraphRequest, e: MetaErrorBody): void {
    res.status(e.status).json({
      error: {
        message: e.message,
        type: e.type,
        code: e.code,
        ...(e.subcode !== undefined ? { error_subcode: e.subcode } : {}),
        ...(e.details !== undefined ? { error_data: { messaging_product: 'whatsapp', details: e.details } } : {}),
        fbtrace_id: `A${randomBytes(9).toString('base64url')}`,
      },
    });
    this.notifyWaiters(record);
  }
}
