import { afterEach, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import { Call } from '../../src/core/call.js';
import { testLogger } from '../../src/core/logger.js';
import type { Gateway } from '../../src/gateway.js';
import { tagOf } from '../../src/sip/message.js';
import { dbfsOf } from '../support/audio.js';
import { simulatedCall, startTestGateway, waitFor } from '../support/gateway.js';
import { startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';

let gw: Gateway | undefined;
let h: SipHarness | undefined;
let peer: RawSipPeer | undefined;
afterEach(async () => {
  await gw?.stop('test_done', 0);
  await h?.stop();
  peer?.close();
  gw = h = peer = undefined;
});

describe('per-call history is bounded', () => {
  it('keeps the latest maxTranscriptEntries / maxToolCalls and counts what it let go', () => {
    const call = new Call({ front: 'test', from: 'a', to: 'b' }, testLogger(), 'c1', {
      maxTranscriptEntries: 3,
      maxToolCalls: 2,
    });
    for (let i = 0; i < 1000; i++) call.addTranscript({ role: 'caller', text: `line ${i}`, at: i });
    for (let i = 0; i < 7; i++) call.addToolCall({ name: 't', callId: `x${i}`, arguments: '{}', at: i });
    expect(call.transcript.map((t) => t.text)).toEqual(['line 997', 'line 998', 'line 999']);
    expect(call.toolCalls.map((t) => t.callId)).toEqual(['x5', 'x6']);
    expect(call.dropped).toEqual({ transcript: 997, toolCalls: 5, signalling: 0 });
  });

  it('the gateway applies limits.* to every call it creates', async () => {
    gw = await startTestGateway({ limits: { maxTranscriptEntries: 4 } });
    const call = gw.ctx.registry.create({ front: 'test', from: 'a', to: 'b' });
    for (let i = 0; i < 10; i++) call.addTranscript({ role: 'ai', text: String(i), at: i });
    expect(call.transcript).toHaveLength(4);
    await call.end({ by: 'gateway', cause: 'test_done' });
  });
});

describe('limits.maxCallDurationSec', () => {
  it('the AI says the goodbye, it plays to the caller, then the call ends as max_duration', async () => {
    gw = await startTestGateway({
      limits: { maxCallDurationSec: 1.5, goodbye: 'Time is up. Goodbye.' },
    });
    const { call, leg } = await simulatedCall(gw);
    await waitFor(() => call.ended, 20_000, 'call ended by the duration limit');
    const limitAt = call.times.created + 1500;
    expect(call.endReason?.cause).toBe('max_duration');
    const goodbye = call.transcript.find((t) => t.text === 'Time is up. Goodbye.');
    expect(goodbye?.role).toBe('ai');
    expect(goodbye!.at).toBeGreaterThanOrEqual(limitAt);
    // The goodbye was heard: at least ~0.8 s of speech written to the caller after the limit.
    const pcmu = createCodec(PCMU_8K);
    // writeTimes are performance.now(); move the limit onto that clock.
    const limitPerf = limitAt - Date.now() + performance.now();
    const loudAfter = leg.written.filter((f, i) => leg.writeTimes[i]! >= limitPerf && dbfsOf(pcmu.decode(f)) > -40);
    expect(loudAfter.length).toBeGreaterThan(40);
    expect(call.times.ended!).toBeGreaterThan(goodbye!.at);
  });

  it('on SIP, an AI that cannot speak on request ends at the limit with a BYE to the carrier', async () => {
    h = await startSipHarness({ config: { limits: { maxCallDurationSec: 1 } } });
    peer = new RawSipPeer();
    await peer.start();
    const callId = newId();
    peer.send(request({ callId, localPort: peer.port, targetPort: h.port, sdp: sdpOffer(4002) }), h.port);
    const ok = await peer.waitFor((m) => m.kind === 'response' && m.status === 200, 5000, '200');
    peer.send(
      request({ callId, method: 'ACK', toTag: tagOf(ok.headers.get('to')), localPort: peer.port, targetPort: h.port }),
      h.port,
    );
    const bye = await peer.waitFor((m) => m.kind === 'request' && m.method === 'BYE', 10_000, 'BYE');
    peer.reply(bye, 200, 'OK', h.port);
    // The record is written once our BYE is answered (its ladder ends with the 200).
    await waitFor(() => h!.gw.ctx.records.list({ front: 'sip' }).length > 0, 5000, 'the call record');
    const rec = h.gw.ctx.records.list({ front: 'sip' })[0];
    expect(rec?.endReason).toMatchObject({ by: 'gateway', cause: 'max_duration' });
  });
});
