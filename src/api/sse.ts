import type { Request, Response } from 'express';
import type { Call } from '../core/call.js';
import type { Logger } from '../core/logger.js';
import type { EventRelay } from '../core/cluster-state.js';
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

/** The other instances' calls, for a cluster-wide stream (see streamAllCalls). */
export interface RemoteCalls {
  relay: EventRelay;
  /** Their live calls now (one listing per stream opened). */
  snapshot: () => Promise<unknown[]>;
}

/** Events held while a cluster-wide stream's snapshot is being gathered, at most. */
const MAX_HELD_EVENTS = 1000;
const RANK: Record<string, number> = { ringing: 0, answered: 1, bridged: 2, ended: 3 };

/**
 * Every call's lifecycle, transcripts and live levels: what the dashboard draws. With `remote` (a
 * cluster) the stream also carries the other instances' calls: their live calls join the snapshot
 * and their events arrive through the relay. Events that come while the others are being listed
 * are held (bounded) and sent after the snapshot, except a call update the snapshot already shows
 * at the same or a later state. Live levels stay per instance (4 a second per call is not worth
 * relaying; the call page reads its own call's levels from the owner).
 */
export function streamAllCalls(
  hub: SseHub,
  registry: CallRegistry,
  req: Request,
  res: Response,
  remote?: RemoteCalls,
): void {
  const watched = new Map<Call, () => void>();
  let held: [string, unknown][] | undefined = remote ? [] : undefined;
  let heldDropped = 0;
  const emit: Send = (event, data) => {
    if (!held) return send(event, data);
    if (held.length < MAX_HELD_EVENTS) held.push([event, data]);
    else heldDropped++;
  };
  const watch = (call: Call) => {
    const onState = () => emit('call', callView(call));
    const onTranscript = (entry: unknown) => emit('transcript', { callId: call.id, ...(entry as object) });
    call.on('state', onState).on('transcript', onTranscript);
    watched.set(call, () => call.off('state', onState).off('transcript', onTranscript));
  };
  const onCreated = (call: Call) => {
    emit('call', callView(call));
    watch(call);
  };
  const onEnded = (call: Call) => {
    emit('ended', callView(call));
    watched.get(call)?.();
    watched.delete(call);
  };
  const unsubscribe = remote?.relay.subscribe((ev) => emit(ev.event, ev.data));
  const maybe = hub.open(req, res, () => {
    clearInterval(timer);
    unsubscribe?.();
    registry.off('created', onCreated).off('ended', onEnded);
    for (const off of watched.values()) off();
    watched.clear();
  });
  if (!maybe) return void unsubscribe?.();
  const send: Send = maybe;
  const local = registry.list().map(callView);
  registry.list().forEach(watch);
  registry.on('created', onCreated).on('ended', onEnded);
  const timer = setInterval(() => {
    if (held) return; // periodic: nothing is lost by waiting for the snapshot
    const bridged = registry.list({ state: 'bridged' });
    if (bridged.length)
      send(
        'levels',
        bridged.map((c) => ({ callId: c.id, ...c.media?.bridge.levels })),
      );
  }, 250);
  if (!remote) return send('snapshot', local);
  void remote
    .snapshot()
    .catch(() => [])
    .then((others) => {
      const shown = new Map<string, number>();
      for (const c of others as { id?: string; state?: string }[]) if (c.id) shown.set(c.id, RANK[c.state ?? ''] ?? 0);
      send('snapshot', [...local, ...others]);
      for (const [event, data] of held ?? []) {
        const v = data as { id?: string; state?: string };
        const stale = event === 'call' && v.id !== undefined && (shown.get(v.id) ?? -1) >= (RANK[v.state ?? ''] ?? 0);
        if (!stale) send(event, data);
      }
      if (heldDropped) send('overflow', { dropped: heldDropped });
      held = undefined;
    });
}
