import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { parse } from 'sdp-transform';
import { dominantFrequency } from '../support/audio.js';
import { openUdpSockets, sleep, waitFor } from '../support/gateway.js';
import { API_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { metaSdpProblems } from '../peers/whatsapp/meta-sdp.js';
import { speechSource, type WhatsAppUser } from '../peers/whatsapp/user.js';
import { opusSince } from '../peers/whatsapp/arrivals.js';
import { speak } from '../../src/ai/local/tts.js';
import { speechMatch } from '../support/speech.js';
import { expectTone, toneSource } from '../peers/whatsapp/tones.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

/** Until the AI's `n`-th turn has been played out and its last frames reached the user. */
async function heardTurn(call: Call, user: WhatsAppUser, n: number): Promise<void> {
  await waitFor(() => call.transcript.filter((e) => e.role === 'ai').length >= n, 20_000, `AI turn ${n}`);
  await waitFor(() => call.media!.bridge.playout.empty, 20_000, `AI turn ${n} played`);
  const playedAt = performance.now();
  await waitFor(() => (user.arrivals.at(-1)?.at ?? 0) > playedAt + 300, 5000, `AI turn ${n} delivered`);
}

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
    const { udpPortMin, udpPortMax } = h.gw.ctx.config.whatsapp;
    expect(cand.every((c) => c.ip === '127.0.0.1' && c.port >= udpPortMin && c.port <= udpPortMax)).toBe(true);
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
    const session = h.sessions.get(call.id)!;
    // Measure once 1.2 s has arrived each way (media starts late on a loaded box), not after a fixed sleep.
    await waitFor(
      () => session.heardPcm(25).length >= 28800 && opusSince(user, t0 + 500) >= 60,
      15_000,
      '1.2 s of audio each way',
    );
    const heard = session.heardPcm(25);
    expectTone(heard, 24000, 1000, { minSamples: 24000, minDb: -18 });
    const got = user.decodeReceived(t0 + 500);
    expectTone(got, 48000, 660, { minSamples: 48000, minDb: -18 });
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
    expect(session.closedWith).toBe('terminate');
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
    await sleep(1000); // negative window: media flowing, no timeout
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
    expect(metaSdpProblems(sdpAnswer, 'answer', offer)).toEqual([]);
    await user.pc.setRemoteDescription({ type: 'answer', sdp: sdpAnswer });
    await user.waitConnected(20_000);
    await waitFor(() => h!.gw.ctx.registry.get(gatewayCallId)?.state === 'bridged', 5000, 'bridged');
    const t0 = performance.now();
    await waitFor(() => opusSince(user, t0 + 300) >= 40, 15_000, '0.8 s of the AI at the user');
    const got = user.decodeReceived(t0 + 300);
    expect(Math.abs(dominantFrequency(got, 48000) - 700) / 700).toBeLessThan(0.02);
    expect((await api(`/sessions/${user.waCallId}/stop`, {})).status).toBe(200);
    await waitFor(() => h!.gw.ctx.registry.size === 0, 3000, 'ended');
    expect(h.graph.requests).toHaveLength(0);
  });

  it('with the real local agent: the user hears the spoken greeting, then its own speech echoed back', async () => {
    h = await startHarness({ realAgent: true });
    const user = h.user('250788000007');
    const greeting = await speak('Hello caller.', 48000);
    const other = await speak('Please hold the line for an agent.', 48000);
    await user.call();
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 5000, 'bridged');
    // The agent was ready before the accept: its greeting was held until then (none of it played into
    // the unanswered call), and starts within a second of it.
    const accept = await h.graph.waitFor('accept', user.waCallId);
    const call = h.gw.ctx.registry.list()[0]!;
    await heardTurn(call, user, 1);
    const loud = user.loudArrivals();
    expect(loud.filter((t) => t < accept.perfAt)).toEqual([]);
    expect(loud[0]! - accept.perfAt).toBeLessThan(1000);
    // What arrived is the greeting's words (envelope match), not merely sound of some level.
    const heardGreeting = user.decodeReceived(accept.perfAt);
    const same = speechMatch(greeting, 48000, heardGreeting, 48000);
    const notSame = speechMatch(other, 48000, heardGreeting, 48000);
    expect(same, `greeting ${same} vs other words ${notSame}`).toBeGreaterThan(0.7);
    expect(notSame).toBeLessThan(same - 0.2);

    const speech = await speechSource('one two three four');
    const spoken = await speak('one two three four', 48000);
    const sentAt = performance.now();
    user.startSending(speech.source);
    // The agent waits for 600 ms of silence after the utterance, then echoes it.
    const speechEnd = sentAt + speech.frames * 20;
    await heardTurn(call, user, 2);
    const echo = user.decodeReceived(speechEnd + 300);
    const echoed = speechMatch(spoken, 48000, echo, 48000);
    const notEchoed = speechMatch(other, 48000, echo, 48000);
    expect(echoed, `echo ${echoed} vs other words ${notEchoed}`).toBeGreaterThan(0.7);
    expect(notEchoed).toBeLessThan(echoed - 0.2);
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

  it('answers an untidy offer (extra codecs, another Opus payload number, a sha-1 fingerprint) with an answer Meta accepts', async () => {
    h = await startHarness();
    const user = h.user('250788000004');
    const clean = await user.createOffer();
    // Opus on 109 instead of 111, PCMU and G722 offered too, and a sha-1 fingerprint beside the sha-256.
    const untidy = clean
      .replace(/(m=audio \d+ UDP\/TLS\/RTP\/SAVPF) 111 126/, '$1 109 0 9 126')
      .replace(/a=rtpmap:111 /g, 'a=rtpmap:109 ')
      .replace(/a=fmtp:111 /g, 'a=fmtp:109 ')
      .replace(/a=rtcp-fb:111 /g, 'a=rtcp-fb:109 ')
      .replace(
        'a=rtpmap:126 telephone-event/8000',
        'a=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:126 telephone-event/8000',
      )
      .replace(
        /(a=fingerprint:sha-256 [^\r]+)/,
        'a=fingerprint:sha-1 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD\r\n$1',
      );
    expect(untidy).toContain('a=rtpmap:109 opus/48000/2');
    expect(await user.postWebhook(user.connectWebhook(untidy))).toBe(200);
    // The stand-in checks the answer against this offer (RFC 3264) with its own rules, not the gateway's.
    const pre = await h.graph.waitFor('pre_accept', user.waCallId);
    expect(pre.problems).toEqual([]);
    const sdp = (pre.body.session as { sdp: string }).sdp;
    expect(sdp).toMatch(/^m=audio \d+ UDP\/TLS\/RTP\/SAVPF 109 126\r$/m);
    expect(sdp).toContain('a=rtpmap:109 opus/48000/2');
    expect(sdp).not.toMatch(/PCMU|G722|sha-1|rtpmap:111/);
    expect(h.graph.byAction('reject', user.waCallId)).toHaveLength(0);
  });

  it("the gateway hangs up: Graph terminate, then Meta's terminate webhook is answered 200 and changes nothing", async () => {
    h = await startHarness();
    const user = h.user('250788000008');
    await user.call();
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 5000, 'bridged');
    const call = h.gw.ctx.registry.list()[0]!;
    await call.end({ by: 'operator', cause: 'api_hangup' });
    const term = await h.graph.waitFor('terminate', user.waCallId);
    expect(term.problems).toEqual([]);
    expect(h.graph.calls.get(user.waCallId)?.state).toBe('terminated');
    const hook = await h.graph.waitForWebhook(user.waCallId);
    expect(hook.result).toBe(200);
    const sent = (hook.body.entry as { changes: { value: { calls: Record<string, unknown>[] } }[] }[])[0]!.changes[0]!
      .value.calls[0]!;
    expect(sent).toMatchObject({ event: 'terminate', status: 'COMPLETED', direction: 'USER_INITIATED' });
    // The late webhook neither ends another call nor makes the gateway terminate twice (Meta would refuse it).
    await waitFor(() => h!.front.activeCount === 0 && h!.gw.ctx.registry.size === 0, 5000, 'released');
    expect(h.graph.byAction('terminate', user.waCallId)).toHaveLength(1);
    expect(call.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
  });
});
