import { afterEach, describe, expect, it } from 'vitest';
import { dominantFrequency, frames, rmsOf } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { startHarness, type Harness } from '../peers/whatsapp/harness.js';
import type { WhatsAppUser } from '../peers/whatsapp/user.js';
import { toneSource } from '../peers/whatsapp/tones.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

const near = (got: number, want: number) => Math.abs(got - want) / want < 0.02;

/** Both directions carry the right tone for `ms` of media (the user's 1000 Hz, the AI's 660 Hz). */
async function audioBothWays(h: Harness, user: WhatsAppUser, ms: number): Promise<void> {
  await waitFor(() => h.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 10_000, 'bridged');
  const call = h.gw.ctx.registry.list()[0]!;
  const session = h.sessions.get(call.id)!;
  user.startSending(toneSource(1000));
  const t0 = performance.now();
  const frames0 = session.heard.length;
  await waitFor(() => session.heard.length - frames0 >= ms / 20, ms * 4, 'AI heard the caller');
  await waitFor(() => user.decodeReceived(t0).length >= (ms / 1000) * 48000, ms * 4, 'user heard the AI');
  const heard = session.heardPcm(frames0 + 25);
  expect(dominantFrequency(heard, 24000), 'what the AI heard').toSatisfy((f: number) => near(f, 1000));
  const got = user.decodeReceived(t0 + 500);
  expect(dominantFrequency(got, 48000), 'what the user heard').toSatisfy((f: number) => near(f, 660));
}

describe('WhatsApp users behind NAT and relays, with DTX and loss', () => {
  it.each(['relay', 'srflx'] as const)(
    'a user offering only %s candidates: ICE completes through the relay and audio flows both ways',
    async (candidates) => {
      h = await startHarness({ freqFor: () => 660 });
      const user = h.user('250788300001', { network: { candidates } });
      await user.call();
      await audioBothWays(h, user, 1500);
      // The gateway's selected pair is the relayed/mapped address, and the media really crossed it.
      const leg = h.front.legFor(user.waCallId)!;
      const relay = user.relay!;
      expect(leg.consentStats().selectedPair).toContain(`127.0.0.1:${relay.netAddress.port}`);
      expect(relay.counts.toGateway).toBeGreaterThan(75);
      expect(relay.counts.toUser).toBeGreaterThan(75);
      // Meta's checks found the offer's candidates well-formed (srflx/relay carry raddr/rport).
      expect((await h.graph.waitFor('accept', user.waCallId)).problems).toEqual([]);
    },
  );

  it('10% RTP loss each way: both tones still arrive, and the gateway conceals what it lost', async () => {
    h = await startHarness({ freqFor: () => 660 });
    const user = h.user('250788300002', {
      network: { candidates: 'relay', lossToGateway: 10, lossToUser: 10, seed: 7 },
    });
    await user.call();
    await audioBothWays(h, user, 3000);
    const relay = user.relay!;
    expect(relay.counts.droppedToGateway).toBeGreaterThan(5);
    expect(relay.counts.droppedToUser).toBeGreaterThan(5);
    const q = h.front.legFor(user.waCallId)!.quality();
    // The gateway saw the holes as loss (concealed), not as an end of media.
    expect(q.jitter?.lost).toBeGreaterThan(0);
    expect(h.gw.ctx.registry.list()[0]!.state).toBe('bridged');
  });

  it('Opus DTX from the user: the pause reaches the AI as silence of the right length, the call stays up', async () => {
    h = await startHarness({ freqFor: () => 660, whatsapp: { rtpTimeoutSec: 2 } });
    const user = h.user('250788300003', { dtx: true });
    await user.call();
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 10_000, 'bridged');
    const call = h.gw.ctx.registry.list()[0]!;
    const session = h.sessions.get(call.id)!;
    // 1 s of 700 Hz, 3 s of digital silence (DTX: nearly nothing sent), 1 s of 1300 Hz.
    const source = (i: number) =>
      i < 50 ? toneSource(700)(i) : i < 200 ? new Int16Array(960) : i < 250 ? toneSource(1300)(i) : new Int16Array(960);
    const frames0 = session.heard.length;
    user.startSending(source);
    await waitFor(() => user.dtxSkipped > 100, 10_000, 'DTX pause');
    await waitFor(() => session.heard.length - frames0 >= 300, 15_000, 'AI heard 6 s');
    expect(call.ended, JSON.stringify(call.endReason)).toBe(false);
    expect(user.sentPackets).toBeLessThan(150); // DTX really suppressed the silence
    // The AI's timeline: the first tone, then ~3 s of silence, then the second tone.
    const heard = frames(session.heardPcm(frames0), 480).map((f) => ({ loud: rmsOf(f) > 500, f }));
    const firstLoud = heard.findIndex((x) => x.loud);
    const secondStart = heard.findIndex((x, k) => k > firstLoud + 60 && x.loud);
    expect(firstLoud).toBeGreaterThanOrEqual(0);
    const gapFrames = secondStart - firstLoud;
    // 4 s from tone start to tone start, within a generous ±0.6 s for buffering.
    expect(gapFrames * 20).toBeGreaterThan(3400);
    expect(gapFrames * 20).toBeLessThan(4600);
    const first = session.heardPcm(frames0).subarray((firstLoud + 5) * 480, (firstLoud + 40) * 480);
    const second = session.heardPcm(frames0).subarray((secondStart + 5) * 480, (secondStart + 40) * 480);
    expect(dominantFrequency(first, 24000)).toSatisfy((f: number) => near(f, 700));
    expect(dominantFrequency(second, 24000)).toSatisfy((f: number) => near(f, 1300));
  });
});
