import type { Request, Response } from 'express';
import type { Call } from '../core/call.js';
import type { CallRegistry } from '../core/registry.js';
import { callView } from './call-view.js';

function open(res: Response): (event: string, data: unknown) => void {
  res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  });
  res.write(': stream open\n\n');
  return (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
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
export function streamCall(call: Call, req: Request, res: Response): void {
  const send = open(res);
  send('snapshot', callView(call));
  const onState = (state: string) => send('state', { callId: call.id, state });
  const onTranscript = (entry: unknown) => send('transcript', { callId: call.id, ...(entry as object) });
  const onTool = (rec: unknown) => send('tool_call', { callId: call.id, ...(rec as object) });
  const onDtmf = (digit: string) => send('dtmf', { callId: call.id, digit });
  const timer = setInterval(() => send('quality', quality(call)), 1000);
  const stop = () => {
    clearInterval(timer);
    call.off('state', onState).off('transcript', onTranscript).off('tool_call', onTool).off('dtmf', onDtmf);
    call.off('ended', onEnded);
  };
  const onEnded = () => {
    send('ended', callView(call));
    stop();
    res.end();
  };
  call.on('state', onState).on('transcript', onTranscript).on('tool_call', onTool).on('dtmf', onDtmf);
  call.once('ended', onEnded);
  req.on('close', stop);
}

/** Every call's lifecycle, transcripts and live levels: what the dashboard draws. */
export function streamAllCalls(registry: CallRegistry, req: Request, res: Response): void {
  const send = open(res);
  send('snapshot', registry.list().map(callView));
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
  req.on('close', () => {
    clearInterval(timer);
    registry.off('created', onCreated).off('ended', onEnded);
    for (const off of watched.values()) off();
  });
}
