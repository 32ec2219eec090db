import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { testLogger } from '../../src/core/logger.js';
import { DrachtioDialog, type DialogHost } from '../../src/sip/drachtio/dialog.js';
import type { DialogLike, SrfLike, SrfRequestLike, SrfResponseLike } from '../../src/sip/drachtio/srf-types.js';
import type { ModifyRequest } from '../../src/sip/engine.js';

/**
 * A body-less re-INVITE on the drachtio engine: our offer in the 200, the answer from its ACK
 * (sipp-delayed-offer.test.ts runs the real thing); here the ACK that never comes or comes late.
 */
const reinvite = (body = '') =>
  ({
    method: 'INVITE',
    uri: 'sip:gw@127.0.0.1',
    body,
    source_address: '127.0.0.1',
    source_port: 5060,
    protocol: 'udp',
    get: () => undefined,
    has: () => false,
    on() {},
  }) as SrfRequestLike;

function setup(ackWaitMs: number) {
  const stack = Object.assign(new EventEmitter(), {
    id: 'd1',
    sip: { callId: 'c1' },
    remote: { sdp: '' },
    destroy: () => Promise.resolve(),
    request: () => Promise.resolve({ status: 200 }),
  });
  const host: DialogHost = {
    srf: {} as SrfLike,
    linkUp: () => true,
    track() {},
    untrack() {},
    byeWhenBack() {},
  };
  const dlg = new DrachtioDialog(stack as unknown as DialogLike, 'c1', host, testLogger(), ackWaitMs);
  const sent: number[] = [];
  const res: SrfResponseLike = { send: (status: number) => void sent.push(status) };
  const acks: (string | undefined)[] = [];
  dlg.on('modify', (m: ModifyRequest) => m.respond({ sdp: 'v=0 offer', onAck: (sdp) => acks.push(sdp) }));
  const modify = () => stack.emit('modify', reinvite(), res);
  return { stack, dlg, sent, acks, modify };
}

describe('drachtio engine: the ACK of a body-less re-INVITE', () => {
  it('carries the answer: onAck gets its SDP once; a retransmitted ACK changes nothing', () => {
    const { stack, sent, acks, modify } = setup(60_000);
    modify();
    expect(sent).toEqual([200]);
    stack.emit('ack', { ...reinvite('v=0 answer') });
    stack.emit('ack', { ...reinvite('v=0 answer') });
    expect(acks).toEqual(['v=0 answer']);
    expect(stack.listenerCount('ack')).toBe(0);
  });

  it('hostile: no ACK ever → onAck(undefined) after the wait, no listener left behind', async () => {
    const { stack, acks, modify } = setup(30);
    modify();
    await new Promise((r) => setTimeout(r, 60));
    expect(acks).toEqual([undefined]);
    expect(stack.listenerCount('ack')).toBe(0);
  });

  it('BYE before the ACK: the wait ends with the call, onAck never runs', async () => {
    const { stack, dlg, acks, modify } = setup(30);
    const gone = new Promise<void>((r) => dlg.once('destroyed', () => r()));
    modify();
    stack.emit('destroy', {}, 'normal release');
    await gone;
    await new Promise((r) => setTimeout(r, 60));
    expect(acks).toEqual([]);
  });
});
