import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { dominantFrequency } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { callsEnvelope } from '../peers/whatsapp/user.js';
import { opusSince } from '../peers/whatsapp/arrivals.js';
import { toneSource } from '../peers/whatsapp/tones.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

const SECOND_ID = '200000000000002';
const SECOND_NUMBER = '35699000002';

describe('WhatsApp: several business numbers', () => {
  it("each call's Graph actions go to its own number; other numbers' webhooks are ignored; outbound `from` is the number", async () => {
    h = await startHarness({
      graphNumbers: [SECOND_ID],
      routes: { second: { kind: 'local', greeting: 'Second line.' } },
      whatsapp: { numbers: [{ phoneNumberId: SECOND_ID, displayNumber: `+${SECOND_NUMBER}`, route: 'second' }] },
    });
    // A call to the second number: pre_accept/accept name it in the path, and its route answers.
    const b = h.user('250788200001');
    Object.assign(b.opts, { phoneNumberId: SECOND_ID, businessNumber: SECOND_NUMBER });
    await b.call();
    const acc = await h.graph.waitFor('accept', b.waCallId);
    expect(acc.problems).toEqual([]);
    expect(acc.path).toBe(`/${h.graph.version}/${SECOND_ID}/calls`);
    expect(h.graph.byAction('pre_accept', b.waCallId)[0]!.path).toBe(acc.path);
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 5000, 'bridged');
    const call = h.gw.ctx.registry.list()[0]!;
    expect(call.route).toBe('second');
    expect(call.info.to).toBe(`+${SECOND_NUMBER}`);

    // A webhook for a number this gateway does not serve: 200, and nothing at all happens.
    const stranger = h.user('250788200002');
    const offer = callsEnvelope('999999999999999', '15550000999', [
      {
        id: stranger.waCallId,
        from: '250788200002',
        to: '15550000999',
        event: 'connect',
        direction: 'USER_INITIATED',
        session: { sdp_type: 'offer', sdp: await stranger.createOffer() },
      },
    ]);
    const before = h.graph.requests.length;
    expect(await stranger.postWebhook(offer)).toBe(200);
    await sleep(500);
    expect(h.graph.requests.length).toBe(before);
    expect(h.gw.ctx.registry.size).toBe(1);
    // Hanging up the second number's call is a terminate webhook carrying that number's metadata.
    expect(await b.hangup()).toBe(200);
    await waitFor(() => call.ended, 3000, 'ended');

    // Outbound from the second number: its path, and its display number as `from`.
    const out = await h.front.startOutboundCall({ to: '+250788200003', from: `+${SECOND_NUMBER}` });
    expect(out.info.from).toBe(`+${SECOND_NUMBER}`);
    const connect = await h.graph.waitFor('connect');
    expect(connect.path).toBe(`/${h.graph.version}/${SECOND_ID}/calls`);
    await out.end({ by: 'operator', cause: 'test' });
    // The first number (single-number config form, no displayNumber) learned it from a webhook.
    const a = h.user('250788200004');
    await a.call();
    await h.graph.waitFor('accept', a.waCallId);
    const out2 = await h.front.startOutboundCall({ to: '+250788200005' });
    expect(out2.info.from).toBe(`+${a.business}`);
    expect(h.graph.byAction('connect').at(-1)!.path).toBe(`/${h.graph.version}/${h.graph.phoneNumberId}/calls`);
    await expect(h.front.startOutboundCall({ to: '+250788200006', from: '+10000000' })).rejects.toMatchObject({
      code: 'not_found',
    });
  });
});

describe('WhatsApp: ICE consent failure', () => {
  it('the gateway ends the call as a media failure and tells Meta (terminate), not as a remote hang-up', async () => {
    h = await startHarness({ freqFor: () => 500, whatsapp: { rtpTimeoutSec: 120 } });
    const user = h.user('250788200007');
    await user.call();
    await waitFor(() => h!.gw.ctx.registry.list({ state: 'bridged' }).length === 1, 5000, 'bridged');
    const call = h.gw.ctx.registry.list()[0]!;
    user.startSending(toneSource(900)); // media keeps flowing: only consent is withdrawn
    const t0 = performance.now();
    await waitFor(() => opusSince(user, t0 + 200) >= 40, 15_000, '0.8 s of the AI at the user');
    expect(Math.abs(dominantFrequency(user.decodeReceived(t0 + 200), 48000) - 500)).toBeLessThan(10);
    user.withdrawConsent();
    const withdrawnAt = Date.now();
    // RFC 7675: consent expires 30 s after the last answered check.
    const term = await h.graph.waitFor('terminate', user.waCallId, 45_000);
    expect(term.problems).toEqual([]);
    expect(term.at - withdrawnAt).toBeGreaterThan(20_000);
    expect(call.endReason).toMatchObject({ by: 'error', cause: 'ice_consent_failed' });
    expect(h.graph.calls.get(user.waCallId)?.state).toBe('terminated');
  }, 60_000);
});

describe('WhatsApp config', () => {
  it('a missing whatsapp.publicIp stops start-up with exit code 2, naming the key', async () => {
    const run = promisify(execFile);
    const err = await run('npx', ['tsx', 'src/main.ts'], {
      env: {
        ...process.env,
        GW__SIP__ENABLED: 'false',
        GW__WHATSAPP__ENABLED: 'true',
        GW__WHATSAPP__ACCESS_TOKEN: 'token-0123456789',
        GW__WHATSAPP__APP_SECRET: 'secret-0123456789',
        GW__WHATSAPP__VERIFY_TOKEN: 'verify-0123456789',
        GW__WHATSAPP__NUMBERS: JSON.stringify([{ phoneNumberId: '106540352242922', displayNumber: '+15550783881' }]),
        WA_PUBLIC_IP: '',
      },
    }).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(
      /whatsapp\.publicIp: got "", expected required when whatsapp\.enabled/,
    );
    expect((err as { stderr: string }).stderr).not.toMatch(/whatsapp\.(accessToken|appSecret|verifyToken|numbers)/);
  });
});
