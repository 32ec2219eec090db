import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { parse } from 'sdp-transform';

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

/** What Meta accepts in our SDP; any other codec or fingerprint is a reported cause of dropped calls. */
export function sdpProblems(sdp: unknown, expectType: 'offer' | 'answer'): string[] {
  if (typeof sdp !== 'string' || !sdp.startsWith('v=0')) return ['session.sdp is not an SDP'];
  const out: string[] = [];
  const parsed = parse(sdp);
  const audio = parsed.media.filter((m) => m.type === 'audio');
  if (audio.length !== 1) out.push(`expected one m=audio, got ${audio.length}`);
  const m = audio[0];
  if (!m) return out;
  if (m.protocol !== 'UDP/TLS/RTP/SAVPF') out.push(`protocol ${m.protocol}`);
  const codecs = m.rtp.map((r) => r.codec.toLowerCase());
  if (!codecs.includes('opus')) out.push('no opus');
  for (const c of codecs) if (c !== 'opus' && c !== 'telephone-event') out.push(`codec ${c} not allowed`);
  const opus = m.rtp.find((r) => r.codec.toLowerCase() === 'opus');
  if (opus && (opus.rate !== 48000 || String(opus.encoding) !== '2')) out.push('opus must be opus/48000/2');
  const fps = sdp.split(/\r?\n/).filter((l) => l.startsWith('a=fingerprint:'));
  if (fps.length === 0) out.push('no DTLS fingerprint');
  for (const f of fps) if (!/^a=fingerprint:sha-256 /i.test(f)) out.push(`fingerprint not sha-256: ${f.slice(14, 30)}`);
  if (!(m.candidates ?? []).some((c) => c.transport.toLowerCase() === 'udp')) out.push('no UDP ICE candidate');
  if (!m.iceUfrag && !parsed.iceUfrag) out.push('no ice-ufrag');
  if (!m.rtcpMux) out.push('no rtcp-mux');
  const setup = m.setup ?? parsed.setup;
  if (expectType === 'answer' && setup !== 'active' && setup !== 'passive') out.push(`answer setup ${setup}`);
  if (expectType === 'offer' && setup !== 'actpass') out.push(`offer setup ${setup}`);
  return out;
}

/** Where a call stands at "Meta", as far as the gateway's Graph actions are concerned. */
export type StubCallState = 'offered' | 'pre_accepted' | 'accepted' | 'ringing' | 'rejected' | 'terminated';

/** How the stand-in misbehaves on the next request(s) of one action, after acting on it. */
export interface Fault {
  /** Answer this late (the action has already taken effect). */
  delayMs?: number;
  /** Act on the request, then drop the connection without answering. */
  loseResponse?: boolean;
  times?: number;
}

/**
 * Stand-in for graph.facebook.com's calling endpoint: POST /<version>/<phone-number-id>/calls.
 * Records every request, checks its shape the way Meta does (400 code 100 on a bad SDP), and
 * answers like Meta. Keeps each call's state, so actions on unknown calls or on calls already
 * accepted/ended get an error. Errors and faults (late or lost responses) can be injected per action.
 */
export class GraphStub extends EventEmitter {
  readonly requests: GraphRequest[] = [];
  readonly calls = new Map<string, { state: StubCallState; phoneNumberId: string }>();
  /** Business numbers (phone-number IDs) this "app" may act for. */
  readonly numbers: Set<string>;
  readonly errors = new Map<string, InjectedError>();
  private readonly faults = new Map<string, Fault>();
  private readonly holds = new Map<string, Promise<void>>();
  private server: Server | undefined;

  constructor(
    readonly accessToken = 'test-access-token',
    readonly phoneNumberId = '106540352242922',
    readonly version = 'v23.0',
    otherNumbers: string[] = [],
  ) {
    super();
    this.numbers = new Set([phoneNumberId, ...otherNumbers]);
  }

  /** A user's call reached "Meta" (the user posts the connect webhook): Graph actions may name it. */
  offered(waCallId: string, phoneNumberId = this.phoneNumberId): void {
    this.calls.set(waCallId, { state: 'offered', phoneNumberId });
  }

  /** The user picked up a business-initiated call. */
  answered(waCallId: string): void {
    const c = this.calls.get(waCallId);
    if (c) c.state = 'accepted';
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

  /** Resolves with the next request of `action` for `callId` (or any), or rejects after timeoutMs. */
  waitFor(action: string, callId?: string, timeoutMs = 10_000): Promise<GraphRequest> {
    const have = this.byAction(action, callId)[0];
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('request', on);
        reject(new Error(`Graph stub: no ${action} for ${callId ?? 'any call'} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (r: GraphRequest) => {
        if (r.action === action && (!callId || r.body.call_id === callId)) {
          clearTimeout(timer);
          this.off('request', on);
          resolve(r);
        }
      };
      this.on('request', on);
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
    const problems: string[] = [];
    if (req.params.version !== this.version) problems.push(`version ${req.params.version}`);
    if (!this.numbers.has(String(req.params.phone))) problems.push(`phone number id ${req.params.phone}`);
    if (req.get('authorization') !== `Bearer ${this.accessToken}`) problems.push('bad Authorization header');
    if (body.messaging_product !== 'whatsapp') problems.push('messaging_product must be "whatsapp"');
    const session = body.session as { sdp_type?: unknown; sdp?: unknown } | undefined;
    switch (action) {
      case 'pre_accept':
      case 'accept':
        if (typeof body.call_id !== 'string') problems.push('call_id missing');
        if (session?.sdp_type !== 'answer')
          problems.push(`session.sdp_type must be "answer", got ${String(session?.sdp_type)}`);
        problems.push(...sdpProblems(session?.sdp, 'answer'));
        break;
      case 'reject':
      case 'terminate':
        if (typeof body.call_id !== 'string') problems.push('call_id missing');
        break;
      case 'connect':
        if (typeof body.to !== 'string') problems.push('to missing');
        if (session?.sdp_type !== 'offer')
          problems.push(`session.sdp_type must be "offer", got ${String(session?.sdp_type)}`);
        problems.push(...sdpProblems(session?.sdp, 'offer'));
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
      res.status(injected.status).json({
        error: {
          message: injected.message,
          type: 'OAuthException',
          code: injected.code,
          error_data: { messaging_product: 'whatsapp', details: injected.details ?? injected.message },
          fbtrace_id: 'Atest',
        },
      });
      this.emit('request', record);
      return;
    }
    if (problems.length) return this.fail(res, record, 400, 100, '(#100) Invalid parameter', problems.join('; '));
    const stateError = this.transition(action, body, String(req.params.phone));
    if (stateError) return this.fail(res, record, 400, stateError.code, stateError.message, stateError.details);
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
      this.emit('request', record);
    };
    if (fault?.delayMs) setTimeout(reply, fault.delayMs);
    else reply();
  }

  /**
   * Apply an action to the call's state; Meta's error when the call is unknown or past the action.
   * (Codes: 100 "Invalid parameter" as Meta answers for a call id it does not know or a call in the
   * wrong state; the exact subcodes Meta uses are not documented, so none are sent.)
   */
  private transition(
    action: string,
    body: Record<string, unknown>,
    phone: string,
  ): { code: number; message: string; details: string } | undefined {
    if (action === 'connect') {
      const id = `wacid.${randomBytes(12).toString('base64url')}`;
      body.assigned_call_id = id;
      this.calls.set(id, { state: 'ringing', phoneNumberId: phone });
      return undefined;
    }
    const id = String(body.call_id);
    const call = this.calls.get(id);
    const bad = (details: string) => ({ code: 100, message: '(#100) Invalid parameter', details });
    if (!call || call.phoneNumberId !== phone) return bad(`Call ${id} not found`);
    const allowed: Record<string, StubCallState[]> = {
      pre_accept: ['offered'],
      // pre_accept is optional (Meta's user-initiated call guide): accept straight from offered is fine.
      accept: ['offered', 'pre_accepted'],
      reject: ['offered', 'pre_accepted'],
      terminate: ['offered', 'pre_accepted', 'accepted', 'ringing'],
    };
    if (!allowed[action]?.includes(call.state)) return bad(`Cannot ${action} call ${id}: call is ${call.state}`);
    call.state = (
      { pre_accept: 'pre_accepted', accept: 'accepted', reject: 'rejected', terminate: 'terminated' } as const
    )[action as 'pre_accept'];
    return undefined;
  }

  private fail(
    res: express.Response,
    record: GraphRequest,
    status: number,
    code: number,
    message: string,
    details: string,
  ): void {
    res.status(status).json({
      error: {
        message,
        type: 'OAuthException',
        code,
        error_data: { messaging_product: 'whatsapp', details },
        fbtrace_id: 'Atest',
      },
    });
    this.emit('request', record);
  }
}
