import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sippCall, startSipHarness, type SipHarness, usePcapDir } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { launchChromium, signInToConsole } from '../support/chromium.js';
import { api, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { leasePortRange, releasePortRange } from '../support/ports.js';

/** The caller plays 1000 Hz for 40 s; the tone AI answers with 440 Hz. */
const pcapDir = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000-long.pcap'), toneRtp('PCMA', 1000, 40_000)));

let h: SipHarness;
let browser: Browser;
let base: string;
let range: [number, number];
beforeAll(async () => {
  range = leasePortRange(100);
  h = await startSipHarness({
    aiFreq: 440,
    config: {
      api: { token: TEST_TOKEN },
      browser: { publicIp: '127.0.0.1', udpPortMin: range[0], udpPortMax: range[0] + 99, maxListenersPerCall: 1 },
    },
  });
  base = `http://127.0.0.1:${h.gw.httpPort}`;
  browser = await launchChromium(['--autoplay-policy=no-user-gesture-required']);
});
afterAll(async () => {
  await browser?.close();
  await h?.stop();
  if (range) releasePortRange(range);
});

const signIn = (page: Page) => signInToConsole(page, base, TEST_TOKEN);

type PhoneWindow = { phone: { listenLevelAt(id: string, hz: number): number; isListening(id: string): boolean } };
const levelAt = (page: Page, id: string, hz: number) =>
  page.evaluate(([i, f]) => (window as unknown as PhoneWindow).phone.listenLevelAt(i as string, f as number), [id, hz]);

/** The listener hears `hz` more than 25 dB above 2500 Hz (a frequency neither side plays), within `timeoutMs`. */
const expectHeard = (page: Page, id: string, hz: number, timeoutMs: number) =>
  expect
    .poll(async () => (await levelAt(page, id, hz)) - (await levelAt(page, id, 2500)), { timeout: timeoutMs })
    .toBeGreaterThan(25);

describe('console listen-in (receive-only browser WebRTC leg) in headless Chromium', () => {
  it('hears the caller and the AI mixed; a second listener over the limit gets 486; leaving does not disturb the call', async () => {
    const page = await browser.newPage();
    await signIn(page);
    const { call, sipp } = await sippCall(h, 'uac-listened.xml', join(pcapDir(), 'pcma-1000-long.pcap'));
    const row = page.locator(`#active tr[data-call-id="${call.id}"]`);
    await row.locator('text=bridged').waitFor({ timeout: 10_000 });
    const registryBefore = h.gw.ctx.registry.size;
    await row.locator('button.listen').click();
    await row.locator('button.listen', { hasText: 'Stop listening' }).waitFor({ timeout: 5_000 });

    // Both directions reach the listener: the caller's 1000 Hz and the AI's 440 Hz stand well above
    // a frequency neither side plays.
    await expectHeard(page, call.id, 1000, 20_000);
    await expectHeard(page, call.id, 440, 10_000);
    // A listener is not a call: nothing new in the registry, no new AI session.
    expect(h.gw.ctx.registry.size).toBe(registryBefore);
    expect(h.sessions.size).toBe(1);

    // maxListenersPerCall is 1: a second operator page is refused with 486.
    const second = await browser.newPage();
    await signIn(second);
    const row2 = second.locator(`#active tr[data-call-id="${call.id}"]`);
    await row2.locator('button.listen').click();
    await second.locator('#phone-state', { hasText: 'listen-in refused: 486' }).waitFor({ timeout: 10_000 });
    await second.close();

    // Leaving: the listener's BYE ends only the listen-in; the call keeps moving audio both ways.
    await row.locator('button.listen').click();
    await row.locator('button.listen', { hasText: /^Listen$/ }).waitFor({ timeout: 10_000 });
    await expect
      .poll(() => page.evaluate((id) => (window as unknown as PhoneWindow).phone.isListening(id), call.id))
      .toBe(false);
    expect(call.ended).toBe(false);
    const stats = call.media!.bridge.stats;
    const [toAi, toLeg] = [stats.framesToAi, stats.framesToLeg];
    await waitFor(() => stats.framesToAi > toAi + 25 && stats.framesToLeg > toLeg + 25, 10_000, 'media still flowing');
    expect(stats.badFrames).toBe(0);

    // The freed slot can be taken again (the limit counts live listeners, not past ones)...
    await row.locator('button.listen').click();
    await row.locator('button.listen', { hasText: 'Stop listening' }).waitFor({ timeout: 5_000 });
    await expectHeard(page, call.id, 440, 20_000);
    // ...and the call's end hangs the listener up.
    expect((await api(h.gw)('DELETE', `/v1/calls/${call.id}`, {})).status).toBe(200);
    await expect
      .poll(() => page.evaluate((id) => (window as unknown as PhoneWindow).phone.isListening(id), call.id), {
        timeout: 10_000,
      })
      .toBe(false);
    const res = await sipp;
    expect(res.code, res.errors).toBe(0);
    await page.close();
  });

  it('from a live call’s detail page: the token asked there, both directions heard, leaving ends only the listen-in', async () => {
    const { call, sipp } = await sippCall(h, 'uac-listened.xml', join(pcapDir(), 'pcma-1000-long.pcap'));
    await waitFor(() => call.state === 'bridged', 10_000, 'bridged');
    const page = await browser.newPage();
    const session = await page.request.post(base + '/v1/auth/session', {
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
    });
    expect(session.ok()).toBe(true);
    await page.goto(`${base}/console/call.html?id=${encodeURIComponent(call.id)}`);
    await page.locator('#listen button.listen').click();
    await page.locator('#listen-state', { hasText: 'enter the API token' }).waitFor({ timeout: 5_000 });
    await page.fill('#listen-token', TEST_TOKEN);
    await page.locator('#listen button.listen').click();
    await expectHeard(page, call.id, 1000, 20_000);
    await expectHeard(page, call.id, 440, 10_000);
    await page.locator('#listen button.listen').click();
    await page.locator('#listen-state', { hasText: 'listen-in ended' }).waitFor({ timeout: 10_000 });
    expect(call.ended).toBe(false);
    expect((await api(h.gw)('DELETE', `/v1/calls/${call.id}`, {})).status).toBe(200);
    const res = await sipp;
    expect(res.code, res.errors).toBe(0);
    await page.close();
  });

  it('a listen-in to a call that does not exist is refused with 404', async () => {
    const page = await browser.newPage();
    await signIn(page);
    await page.evaluate(() =>
      document.dispatchEvent(
        new CustomEvent('listen-in', {
          detail: { callId: '00000000-0000-4000-8000-000000000000', button: document.createElement('button') },
        }),
      ),
    );
    await page.locator('#phone-state', { hasText: 'listen-in refused: 404' }).waitFor({ timeout: 10_000 });
    await page.close();
  });
});
