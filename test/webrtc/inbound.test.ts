import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { parse } from 'sdp-transform';
import { dbfsOf, dominantFrequency, toneLevelDb, tone } from '../support/audio.js';
import { openUdpSockets, sleep, waitFor } from '../support/gateway.js';
import { API_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { sdpProblems } from '../peers/whatsapp/graph-stub.js';
import { speechSource } from '../peers/whatsapp/user.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

/** A continuous tone source for the user peer, phase-continuous across frames. */
const toneSource = (freq: number) => (i: number) => tone(freq, 48000, 20, 8000, (2 * Math.PI * freq * i * 960) / 48000);

describe('WhatsApp inbound call (real gateway, werift user peer, Graph stand-in)', () => {
  it('answers with a WhatsApp-valid SDP, carries audio both ways, and the terminate webhook frees everything', async () => {
    h = await startHarness({ freqFor: () => 660 });
    const udpBefore = openUdpSockets();
    const user = h.user('250788123456');
    await user.call();

    // Signalling: pre_accept then accept, both sdp_type "answer" with the same valid SDP.
    const pre = await h.graph.waitFor('pre_accept', user.waCallId);
    const acc = await h.graph.waitFor('accept', user.waCallId);
    expect(pre.problems).toEqual([]);
    expect(acc.problems).toEqual([]);
    expect(pre.at).toBeLessThanOrEqual(acc.at);
    const answer = acc.body.session as { sdp_type: string; sdp: string };
    expect(answer.sdp_type).toBe('answer');
    expect(answer.sdp).toBe((pre.body.session as { sdp: string }).sdp);
    const m = parse(answer.sdp).media[0]!;
    expect(m.rtp.map((r) => r.codec.toLowerCase()).sort()).toEqual(['opus', 'telephone-event']);
    expect(answer.sdp.match(/a=fingerprint:/g)).toHaveLength(1);
    expect(answer.sdp).toMatch(/a=fingerprint:sha-256 /);
    const cand = m.candidates!;
    expect(cand.length).toBeGreaterThan(0);
    expect(cand.every((c) => c.ip === '127.0.0.1' && c.port >= 41000 && c.port <= 41999)).toBe(true);
    expect(m.port).toBe(cand[0]!.port);

    // The call is bridged to the AI route.
    await waitFor(() => h!.gw.ctx.registry.list({ front: 'whatsapp', state: 'bridged' }).length === 1, 5000, 'bridged');
    const call = h.gw.ctx.registry.list({ front: 'whatsapp' })[0]!;
    expect(call.info.from).toBe('+250788123456');
    expect(call.info.externalId).toBe(user.waCallId);
    expect(call.transfer).toBeUndefined();

    // Audio both ways: the user's 1000 Hz tone reaches the AI; the AI's 660 Hz tone reaches the user.
    user.startSending(toneSource(1000));
    const t0 = performance.now();
    await sleep(2500);
    const session = h.sessions.get(call.id)!;
    const heard = session.heardPcm(25);
    expect(heard.length).toBeGreaterThan(24000);
    expect(Math.abs(dominantFrequency(heard, 24000) - 1000) / 1000).toBeLessThan(0.02);
    expect(toneLevelDb(heard, 24000, 1000)).toBeGreaterThan(-18);
    const got = user.decodeReceived(t0 + 500);
    expect(got.length).toBeGreaterThan(48000);
    expect(Math.abs(dominantFrequency(got, 48000) - 660) / 660).toBeLessThan(0.02);
    expect(toneLevelDb(got, 48000, 660)).toBeGreaterThan(-18);
    // RTP the user received: one payload type, +1 seq and +960 timestamp per packet, marker on the first.
    const opus = user.arrivals.filter((a) => a.payloadType === 111);
    expect(opus[0]!.marker).toBe(true);
    for (let i = 1; i < opus.length; i++) {
      expect((opus[i]!.seq - opus[i - 1]!.seq) & 0xffff).toBe(1);
      expect((opus[i]!.timestamp - opus[i - 1]!.timestamp) >>> 0).toBe(960);
    }

    // DTMF from the user arrives as a call dtmf event.
    const digits: string[] = [];
    call.on('dtmf', (d) => digits.push(d));
    user.sendDtmf('7');
    await waitFor(() => digits.length > 0, 3000, 'dtmf');
    expect(digits).toEqual(['7']);

    // The user hangs up: terminate webhook ends the call, the AI session and the leg; no Graph terminate.
    expect(await user.hangup(3)).toBe(200);
    await waitFor(() => call.ended && h!.front.activeCount === 0, 5000, 'call ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'terminate' });
    expect(session.closedWith).toBeDefined();
    await sleep(200);
    expect(h.graph.byAction('terminate')).toHaveLength(0);
    expect(openUdpSockets()).toBeLessThanOrEqual(udpBefore);
    expect(h.gw.ctx.registry.size).toBe(0);
  });

  it('declines via Graph reject (never accepted, so nothing to terminate) when media never connects', async () => {
    h = await startHarness({ mediaTimeoutSec: 1.5 });
    const user = h.user('250788000002');
    const sdp = await user.createOffer();
    // Never apply the gateway's answer: ICE never completes on our side.
    expect(await user.postWebhook(user.connectWebhook(sdp))).toBe(200);
    await h.graph.waitFor('pre_accept', user.waCallId);
    const ended: Call[] = [];
    h.gw.ctx.registry.on('ended', (c) => ended.push(c));
    const rej = await h.graph.waitFor('reject', user.waCallId, 6000);
    expect(rej.problems).toEqual([]);
    expect(h.graph.byAction('accept', user.waCallId)).toHaveLength(0);
    expect(h.graph.byAction('terminate', user.waCallId)).toHaveLength(0);
    await waitFor(() => ended.length === 1, 3000, 'call ended');
    expect(ended[0]!.endReason).toMatchObject({ by: 'timeout', cause: 'media_timeout' });
    expect(ended[0]!.endReason!.detail).toMatch(/media not connected after 1500 ms/);
    expect(h.front.activeCount).toBe(0);
  });

  it('ends the call and terminates via Graph when RTP stops but the peer is still there', async () => {
    h = await startHarness({ whatsapp: { rtpTimeoutSec: 1.5 } });
    const user = h.user('250788000005');
    await user.call();
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 5000, 'bridged');
    const call = h.gw.ctx.registry.list()[0]!;
    user.startSending(toneSource(800));
    await sleep(1000);
    expect(call.ended).toBe(false);
    user.stopSending(); // ICE consent keeps answering; only the media stops
    const stoppedAt = Date.now();
    const term = await h.graph.waitFor('terminate', user.waCallId, 5000);
    expect(term.at - stoppedAt).toBeGreaterThanOrEqual(1400);
    expect(call.endReason).toMatchObject({ by: 'timeout', cause: 'media_timeout' });
    await waitFor(() => h!.front.activeCount === 0, 2000, 'leg released');
  });

  it('media-only sessions: an external webhook handler gets our answer over the REST API, no Graph calls', async () => {
    h = await startHarness({ freqFor: () => 700 });
    const user = h.user('250788000006');
    const offer = await user.createOffer();
    const api = (path: string, body: unknown) =>
      fetch(`http://127.0.0.1:${h!.gw.httpPort}/v1${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const res = await api('/sessions/start', {
      callId: user.waCallId,
      sdpOffer: offer,
      fromNumber: '250788000006',
      toNumber: '15550783881',
    });
    expect(res.status).toBe(201);
    const { sdpAnswer, gatewayCallId } = (await res.json()) as { sdpAnswer: string; gatewayCallId: string };
    expect(sdpProblems(sdpAnswer, 'answer')).toEqual([]);
    await user.pc.setRemoteDescription({ type: 'answer', sdp: sdpAnswer });
    await user.waitConnected(5000);
    await waitFor(() => h!.gw.ctx.registry.get(gatewayCallId)?.state === 'bridged', 5000, 'bridged');
    const t0 = performance.now();
    await sleep(1200);
    const got = user.decodeReceived(t0 + 300);
    expect(Math.abs(dominantFrequency(got, 48000) - 700) / 700).toBeLessThan(0.02);
    expect((await api(`/sessions/${user.waCallId}/stop`, {})).status).toBe(200);
    await waitFor(() => h!.gw.ctx.registry.size === 0, 3000, 'ended');
    expect(h.graph.requests).toHaveLength(0);
  });

  it('with the real local agent: the user hears the spoken greeting, then its own speech echoed back', async () => {
    h = await startHarness({ realAgent: true });
    const user = h.user('250788000007');
    await user.call();
    const t0 = performance.now();
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 5000, 'bridged');
    // Greeting ("Hello caller.") arrives as speech energy within the first 2 s.
    await sleep(2000);
    expect(dbfsOf(user.decodeReceived(t0, t0 + 2000))).toBeGreaterThan(-40);
    // The agent was ready before the accept: its greeting was held until then (none of it played into
    // the unanswered call), and starts within a second of it.
    const accept = await h.graph.waitFor('accept', user.waCallId);
    const loud = user.loudArrivals();
    expect(loud.filter((t) => t < accept.perfAt)).toEqual([]);
    expect(loud.length).toBeGreaterThan(25);
    expect(loud[0]! - accept.perfAt).toBeLessThan(1000);
    const speech = await speechSource('one two three four');
    const sentAt = performance.now();
    user.startSending(speech.source);
    // The agent waits for 600 ms of silence after the utterance, then echoes it.
    const speechEnd = sentAt + speech.frames * 20;
    await sleep(speechEnd + 600 + speech.frames * 20 - performance.now() + 500);
    const echo = user.decodeReceived(speechEnd + 300);
    expect(dbfsOf(echo)).toBeGreaterThan(-40);
    const call = h.gw.ctx.registry.list()[0]!;
    expect(call.transcript.filter((e) => e.role === 'ai').length).toBeGreaterThanOrEqual(2);
  });

  it('rejects an offer without Opus instead of answering with a codec WhatsApp cannot use', async () => {
    h = await startHarness();
    const user = h.user('250788000003');
    const sdp = (await user.createOffer())
      .replace(/a=rtpmap:111 opus\/48000\/2/, 'a=rtpmap:111 G722/8000')
      .replace(/a=fmtp:111 .*\r\n/, '');
    expect(await user.postWebhook(user.connectWebhook(sdp))).toBe(200);
    const rej = await h.graph.waitFor('reject', user.waCallId, 5000);
    expect(rej.problems).toEqual([]);
    expect(h.graph.byAction('pre_accept', user.waCallId)).toHaveLength(0);
  });

  it('the Graph stand-in refuses the SDP shapes that make WhatsApp drop calls', async () => {
    h = await startHarness();
    const user = h.user('250788000004');
    const good = await user.createOffer();
    // Our own peer's offer is WhatsApp-shaped; corrupt it the four reported ways.
    expect(sdpProblems(good, 'offer')).toEqual([]);
    expect(sdpProblems(good.replace('a=rtpmap:126 telephone-event/8000', 'a=rtpmap:126 PCMU/8000'), 'offer')).toContain(
      'codec pcmu not allowed',
    );
    expect(sdpProblems(good.replace('a=fingerprint:sha-256', 'a=fingerprint:sha-1'), 'offer').join()).toMatch(
      /sha-256/,
    );
    expect(sdpProblems(good.replace(/a=candidate:.*\r\n/g, ''), 'offer')).toContain('no UDP ICE candidate');
  });
});
