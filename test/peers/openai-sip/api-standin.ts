import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import express from 'express';

export interface RecordedRequest {
  action: string;
  callId: string;
  auth: string | undefined;
  body: Record<string, unknown>;
  problems: string[];
}

/**
 * Local stand-in for OpenAI's /v1/realtime/calls/{id}/{accept|reject|refer|hangup}: records every
 * request and checks it against the documented body (accept carries a realtime session object).
 */
export class OpenAiApiStandIn {
  readonly requests: RecordedRequest[] = [];
  private server: Server | undefined;
  private waiters: { pred: (r: RecordedRequest) => boolean; resolve: (r: RecordedRequest) => void }[] = [];

  constructor(private readonly apiKey: string) {}

  get baseUrl(): string {
    return `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}/v1`;
  }

  async start(): Promise<string> {
    const app = express();
    app.use(express.json());
    app.post('/v1/realtime/calls/:id/:action', (req, res) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const problems: string[] = [];
      if (req.get('authorization') !== `Bearer ${this.apiKey}`) problems.push('bad authorization');
      const action = req.params.action;
      if (!['accept', 'reject', 'refer', 'hangup'].includes(action)) problems.push(`unknown action ${action}`);
      if (action === 'accept') {
        if (body.type !== 'realtime') problems.push('accept: session.type must be "realtime"');
        if (typeof body.model !== 'string') problems.push('accept: model missing');
        if (body.instructions !== undefined && typeof body.instructions !== 'string')
          problems.push('accept: instructions not a string');
      }
      if (action === 'reject' && body.status_code !== undefined && typeof body.status_code !== 'number')
        problems.push('reject: status_code');
      if (action === 'refer' && typeof body.target_uri !== 'string') problems.push('refer: target_uri missing');
      const rec = { action, callId: req.params.id, auth: req.get('authorization'), body, problems };
      this.requests.push(rec);
      this.waiters = this.waiters.filter((w) => (w.pred(rec) ? (w.resolve(rec), false) : true));
      if (problems.length) return res.status(400).json({ error: { message: problems.join('; ') } });
      res.status(200).json({});
    });
    this.server = createServer(app);
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
  }

  waitFor(pred: (r: RecordedRequest) => boolean, timeoutMs: number): Promise<RecordedRequest> {
    const done = this.requests.find(pred);
    if (done) return Promise.resolve(done);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error('OpenAI stand-in: expected request never came'));
      }, timeoutMs);
    });
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
