import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { parse } from 'sdp-transform';

/** One request the gateway made to the Graph API, with what was wrong with it (if anything). */
export interface GraphRequest {
  at: number;
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

/**
 * Stand-in for graph.facebook.com's calling endpoint: POST /<version>/<phone-number-id>/calls.
 * Records every request, checks its shape the way Meta does (400 code 100 on a bad SDP), and
 * answers like Meta. Errors can be injected per action.
 */
export class GraphStub extends EventEmitter {
  readonly requests: GraphRequest[] = [];
  private readonly errors = new Map<string, InjectedError>();
  private readonly holds = new Map<string, Promise<void>>();
  private server: Server | undefined;

  constructor(
    readonly accessToken = 'test-access-token',
    readonly phoneNumberId = '106540352242922',
    readonly version = 'v23.0',
  ) {
    super();
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

  private handle(req: express.Request, res: express.Response): void {
    const held = this.holds.get(String((req.body as Record<string, unknown> | undefined)?.action ?? ''));
    if (held) {
      this.holds.delete(String((req.body as Record<string, unknown>).action));
      void held.then(() => this.handle(req, res));
      return;
    }
    const body = (req.body ?? {}) as Record<string, unknown>;
    const action = String(body.action ?? '');
    const problems: string[] = [];
    if (req.params.version !== this.version) problems.push(`version ${req.params.version}`);
    if (req.params.phone !== this.phoneNumberId) problems.push(`phone number id ${req.params.phone}`);
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
    if (problems.length) {
      res.status(400).json({
        error: {
          message: '(#100) Invalid parameter',
          type: 'OAuthException',
          code: 100,
          error_data: { messaging_product: 'whatsapp', details: problems.join('; ') },
          fbtrace_id: 'Atest',
        },
      });
    } else if (action === 'connect') {
      const id = `wacid.${randomBytes(12).toString('base64url')}`;
      record.body.assigned_call_id = id;
      res.json({ messaging_product: 'whatsapp', calls: [{ id }] });
    } else {
      res.json({ messaging_product: 'whatsapp', success: true });
    }
    this.emit('request', record);
  }
}
