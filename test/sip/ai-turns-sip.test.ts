import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { tagOf, type SipMessage } from '../../src/sip/message.js';
import { readOffer } from '../../src/sip/sdp.js';
import { RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { RealtimeTestServer, type RealtimeTestServerOptions } from '../peers/realtime/server.js';
import { startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { dbfsOf, dominantFrequency, frames, concat } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';

/** The stated bound: after the 200 OK the caller hears the AI's greeting within this (nothing said). */
const GREETING_WITHIN_MS = 2000;

let h: SipHarness | undefined;
let peer: RawSipPeer | undefined;
let rt: RealtimeTestServer | undefined;
let media: RtpToneEndpoint | undefined;
afterEach(async () => {
  await h?.stop();
  peer?.close();
  media?.close();
  await rt?.stop();
  h = peer = rt = media = undefined;
});

async function setup(server: RealtimeTestServerOptions = {}, route: Record<string, unknown> = {}) {
  rt = new RealtimeTestServer(server);
  await rt.start();
  h = await startSipHarness({
    routes: {
      openai: { kind: 'realtime', url: rt.url, apiKey: 'sk-test-sip', connectTimeoutMs: 2000, ...route },
    },
    routing: { default: 'openai', rules: [] },
  });
  peer = new RawSipPeer();
  await peer.start();
  media = new RtpToneEndpoint(1000);
  await media.start();
  return { h, peer, rt, media };
}

/** A carrier INVITE offering PCMU with the RTP endpoint's port; resolves with the final response. */
async function invite(h: SipHarness, peer: RawSipPeer, media: RtpToneEndpoint) {
  const callId = newId();
  const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
  peer.send(
    request({ callId, localPort: peer.port, targetPort: h.port, sdp: sdpOffer(media.port, 'sendrecv', '0 101') }),
    h.port,
  );
  const final = await peer.waitFor(
    (m) => m.kind === 'response' && m.status >= 200 && m.headers.get('call-id') === callId,
    6000,
    'final response',
  );
  return { callId, final, at: performance.now(), call: await created };
}

function ackAndListen(h: SipHarness, peer: RawSipPeer, media: RtpToneEndpoint, callId: string, ok: SipMessage) {
  const toTag = tagOf(ok.headers.get('to'))!;
  peer.send(request({ callId, method: 'ACK', toTag, localPort: peer.port, targetPort: h.port }), h.port);
  const answer = readOffer(ok.kind === 'response' ? (ok.body ?? '') : '', ['PCMU'], true);
  if (!answer.ok) throw new Error(`bad SDP answer: ${answer.reason}`);
  media.setRemote(answer.offer.address, answer.offer.port, 'PCMU', answer.offer.payloadType);
  return toTag;
}

const loudFrames = (m: RtpToneEndpoint) => frames(m.heard(), 160).filter((f) => dbfsOf(f) > -30);

describe('SIP inbound with an OpenAI Realtime route (real SIP, RTP and WebSocket)', () => {
  it('firstTurn ai: after the 200 the caller hears the greeting without saying anything; latency is on the call record', async () => {
    const { h, peer, rt, media } = await setup();
    const { callId, final, at, call } = await invite(h, peer, media);
    expect(final.kind === 'response' && final.status).toBe(200);
    // The AI was configured before the 200 (ringing meanwhile), and asked to greet only after it.
    const conn = rt.connections[0]!;
    const created = rt.receivedOf('response.create');
    expect(created.length).toBeLessThanOrEqual(1);
    ackAndListen(h, peer, media, callId, final);
    let firstLoudAt = 0;
    await waitFor(
      () => {
        if (!firstLoudAt && loudFrames(media).length > 0) firstLoudAt = performance.now();
        return loudFrames(media).length >= 25;
      },
      6000,
      'greeting at the carrier',
    );
    expect(firstLoudAt - at).toBeLessThan(GREETING_WITHIN_MS);
    expect(media.sent).toBe(0); // the caller said nothing
    const greeting = concat(loudFrames(media));
    expect(Math.abs(dominantFrequency(greeting, 8000) - 600)).toBeLessThan(12);
    expect(rt.receivedOf('response.create')).toEqual([{ type: 'response.create' }]);
    expect(conn.session.audio?.output?.format).toEqual({ type: 'audio/pcmu' });
    await waitFor(() => call.latency.view().answerToFirstAudio !== null, 3000, 'answer latency');
    const sample = call.latency.view().answerToFirstAudio!;
    expect(sample.totalMs).toBeLessThan(GREETING_WITHIN_MS);
    expect(sample.aiMs).toBeLessThanOrEqual(sample.totalMs);
    const metrics = await h.gw.ctx.metrics.registry.getSingleMetricAsString('gateway_answer_to_first_ai_audio_seconds');
    expect(metrics).toMatch(/gateway_answer_to_first_ai_audio_seconds_count\{share="ai"\} 1/);
    expect(rt.violations).toEqual([]);
  });

  it('firstTurn none: no audio until the caller speaks, then the answer', async () => {
    const { h, peer, rt, media } = await setup({}, { firstTurn: { mode: 'none' } });
    const { callId, final } = await invite(h, peer, media);
    expect(final.kind === 'response' && final.status).toBe(200);
    ackAndListen(h, peer, media, callId, final);
    await sleep(1500);
    expect(loudFrames(media)).toHaveLength(0);
    expect(rt.receivedOf('response.create')).toHaveLength(0);
    media.startSending();
    await sleep(600);
    media.amplitude = 0; // the caller goes quiet; RTP carries on
    await waitFor(() => loudFrames(media).length >= 25, 6000, 'answer at the carrier');
    expect(Math.abs(dominantFrequency(concat(loudFrames(media)), 8000) - 600)).toBeLessThan(12);
  });

  it('the Realtime server refuses (401): 503 with Retry-After, never a 200', async () => {
    const { h, peer, media } = await setup({ rejectWith: 401 }, { retryAfterSec: 120 });
    const { final, call } = await invite(h, peer, media);
    expect(final.kind === 'response' && `${final.status} ${final.reason}`).toBe(
      '503 Service Unavailable (AI unavailable)',
    );
    expect(final.headers.get('retry-after')).toBe('120');
    expect(peer.responses(200, 'INVITE')).toHaveLength(0);
    expect(call.endReason).toMatchObject({ cause: 'ai_connect_failed' });
    await waitFor(() => h.front.ports.used === 0, 2000, 'RTP ports released');
  });

  it('onAiUnavailable apologise: 200, a spoken apology, then the gateway hangs up (BYE)', async () => {
    const { h, peer, media } = await setup(
      { rejectWith: 429 },
      { onAiUnavailable: 'apologise', apologyText: 'Sorry, please call again later.' },
    );
    media.amplitude = 0; // a quiet caller, RTP flowing as from a real carrier
    const { callId, final, call } = await invite(h, peer, media);
    expect(final.kind === 'response' && final.status).toBe(200);
    ackAndListen(h, peer, media, callId, final);
    media.startSending();
    const bye = await peer.waitFor((m) => m.kind === 'request' && m.method === 'BYE', 15_000, 'BYE');
    peer.reply(bye, 200, 'OK', h.port);
    expect(bye.headers.get('reason')).toContain('ai_unavailable');
    expect(loudFrames(media).length).toBeGreaterThanOrEqual(25); // the apology reached the carrier
    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_unavailable' });
  });
});
