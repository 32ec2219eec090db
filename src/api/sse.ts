import type { Request, Response } from 'express';
import type { Call } from '../core/call.js';
import type { Logger } from '../core/logger.js';
import type { CallRegistry } from '../core/registry.js';
import { callView } from './call-view.js';
import { sendError } from './errors.js';

type Send = (event: string, data: unknown) => void;

/**
 * Every open Server-Sent Events stream: capped in number (more get 503), each with bounded
 * backlog — a consumer that does not read (a stalled dashboard, a stranger) is dropped instead of
 * buffering without end — and all closed at once when the gateway drains.
 */
export class SseHub {
  private readonly streams = new Map<Response, () => void>();

  constructor(
    private readonly maxClients: number,
    private readonly maxBufferedBytes: number,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  /**
   * Open a stream, or answer 503 when at the cap (undefined). `cleanup` runs exactly once, on
   * client close, drop or drain.
   */
  open(req: Request, res: Response, cleanup: () => void): Send | undefined {
    if (this.streams.size >= this.maxClients) {
      this.log.warn({ open: this.streams.size, ip: req.ip }, 'SSE client refused: stream cap reached');
      res.set('Retry-After', '10');
      sendError(res, 503, 'too_many_streams', `at most ${this.maxClients} event streams at once`);
      return undefined;
    }
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.streams.delete(res);
      cleanup();
    };
    this.streams.set(res, finish);
    res.on('close', finish);
    req.on('close', finish);
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write(': stream open\n\n');
    return (event, data) => {
      if (done) return;
      if (res.writableLength > this.maxBufferedBytes) {
        this.log.warn({ backlog: res.writableLength, ip: req.ip }, 'SSE client too slow: dropped');
        finish();
        res.destroy();
        return;
      }
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
  }

  /** Drain: end every stream (the clients see the stream close and may reconnect elsewhere). */
  closeAll(): void {
    for (const [res, finish] of [...this.streams]) {
      finish();
      res.end();
    }
  }
}

function quality(call: Call) {
  return {
    callId: call.id,
    levels: call.media?.bridge.levels,
    bridge: call.media?.bridge.stats,
    legs: call.legs.map((l) => ({ id: l.id, ...l.quality() })),
  };
}

/** One call's events as Server-Sent Events: state, transcript, tool calls, DTMF, quality each second. */
export function streamCall(hub: SseHub, call: Call, req: Request, res: Response): void {
  const onState = (state: string) => send('state', { callId: call.id, state });
  const onTranscript = (entry: unknown) => send('transcript', { callId: call.id, ...(entry as object) });
  const onTool = (rec: unknown) => send('tool_call', { callId: call.id, ...(rec as object) });
  const onDtmf = (digit: string) => send('dtmf', { callId: call.id, digit });
  const onEnded = () => {
    send('ended', callView(call));
    res.end();
  };
  const maybe = hub.open(req, res, () => {
    clearInterval(timer);
    call.off('state', onState).off('transcript', onTranscript).off('tool_call', onTool).off('dtmf', onDtmf);
    call.off('ended', onEnded);
  });
  if (!maybe) return;
  const send: Send = maybe;
  send('snapshot', callView(call));
  const timer = setInterval(() => send('quality', quality(call)), 1000);
  call.on('state', onState).on('transcript', onTranscript).on('tool_call', onTool).on('dtmf', onDtmf);
  call.once('ended', onEnded);
}

/** Every call's lifecycle, transcripts and live levels: what the dashboard draws. */
export function streamAllCalls(hub: SseHub, registry: CallRegistry, req: Request, res: Response): void {
  const watched = new Map<Call, () => void>();
  const watch = (call: Call) => {
    const onState = () => send('call', callView(call));
    const onTranscript = (entry: unknown) => send('transcript', { callId: call.id, ...(entry as object) });
    call.on('state', onState).on('transcript', onTranscript);
    watched.set(call, () => call.off('state', onState).off('transcript', onTranscript));
  };
  const onCreated = (call: Call) => {
    send('call', callView(call));
    watch(call);
  };
  const onEnded = (call: Call) => {
    send('ended', callView(call));
    watched.get(call)?.();
    watched.delete(call);
  };
  const maybe = hub.open(req, res, () => {
    clearInterval(timer);
    registry.off('created', onCreated).off('ended', onEnded);
    for (const off of watched.values()) off();
    watched.clear();
  });
  if (!maybe) return;
  const send: Send = maybe;
  send('snapshot', registry.list().map(callView));
  registry.list().forEach(watch);
  registry.on('created', onCreated).on('ended', onEnded);
  const timer = setInterval(() => {
    const bridged = registry.list({ state: 'bridged' });
    if (bridged.length)
      send(
        'levels',
        bridged.map((c) => ({ callId: c.id, ...c.media?.bridge.levels })),
      );
  }, 250);
}
