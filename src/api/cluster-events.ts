import client from 'prom-client';
import type { Call } from '../core/call.js';
import type { EventRelay } from '../core/cluster-state.js';
import type { CallRegistry } from '../core/registry.js';
import { callView, type CallView } from './call-view.js';

/**
 * A call as another instance's event stream shows it: the live list's fields, without the SIP
 * ladder and the quality samples (the call page reads those from GET /v1/calls/:id, which reaches
 * the owner), so a relayed event stays a few kB.
 */
export function relayedView(call: Call): Omit<CallView, 'signalling' | 'qualityOverTime'> {
  const { signalling: _s, qualityOverTime: _q, ...view } = callView(call);
  return view;
}

/**
 * Publishes this instance's call lifecycle and transcripts for the other instances' GET /v1/events
 * (the events streamAllCalls sends for local calls, with the same names and shapes).
 */
export function publishCallEvents(registry: CallRegistry, relay: EventRelay): void {
  registry.on('created', (call) => {
    relay.publish('call', relayedView(call));
    const onState = () => relay.publish('call', relayedView(call));
    const onTranscript = (entry: unknown) => relay.publish('transcript', { callId: call.id, ...(entry as object) });
    call.on('state', onState).on('transcript', onTranscript);
    call.once('ended', () => {
      call.off('state', onState).off('transcript', onTranscript);
      relay.publish('ended', relayedView(call));
    });
  });
}

/** gateway_cluster_events_dropped_total{reason}: call events the relay could not carry. */
export function relayDropCounter(registry: client.Registry): (reason: string) => void {
  const counter = new client.Counter({
    name: 'gateway_cluster_events_dropped_total',
    help: 'Call events not relayed between instances (too_large, backlog, redis_error, malformed)',
    labelNames: ['reason'],
    registers: [registry],
  });
  return (reason) => counter.inc({ reason });
}
