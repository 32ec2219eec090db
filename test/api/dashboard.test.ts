import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Gateway } from '../../src/gateway.js';
import { frames, tone } from '../support/audio.js';
import { simulatedCall, startTestGateway, TEST_TOKEN } from '../support/gateway.js';
import { launchChromium } from '../support/chromium.js';

let gw: Gateway;
let browser: Browser;
beforeAll(async () => {
  gw = await startTestGateway();
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await gw?.stop('test_done', 0);
});

describe('live dashboard in headless Chromium', () => {
  it('shows a call in progress, updates its transcript live, and moves it to Ended when it hangs up', async () => {
    const page = await browser.newPage();
    // The page must run clean in a real browser: no uncaught errors, and no failing request other
    // than the API's 401s before the token is given (expected: that is how the page asks for it).
    const pageErrors: string[] = [];
    const failed: string[] = [];
    let authed = false;
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (r.status() >= 400 && !(r.status() === 401 && !authed) && path !== '/favicon.ico')
        failed.push(`${r.status()} ${path}`);
    });
    await page.goto(`http://127.0.0.1:${gw.httpPort}/`);
    await page.locator('#auth').waitFor({ state: 'visible', timeout: 10_000 });
    await page.fill('#token', TEST_TOKEN);
    authed = true;
    await page.click('#auth button');
    await page.locator('#status', { hasText: 'live' }).waitFor({ timeout: 10_000 });
    expect(page.url()).not.toContain(TEST_TOKEN);
    expect(await page.evaluate(() => JSON.stringify(localStorage) + document.cookie)).not.toContain(TEST_TOKEN);
    const cookies = await page.context().cookies();
    expect(cookies.find((c) => c.name === 'gw_ops')).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    // A reload reconnects with the cookie alone.
    await page.reload();
    await page.locator('#status', { hasText: 'live' }).waitFor({ timeout: 10_000 });
    const { call, leg } = await simulatedCall(gw, { from: '+250788555111' });
    const row = page.locator(`#active tr[data-call-id="${call.id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await expect.poll(() => row.innerText(), { timeout: 10_000 }).toContain('+250788555111');
    await expect.poll(() => row.innerText(), { timeout: 10_000 }).toContain('bridged');
    await expect.poll(() => row.innerText(), { timeout: 10_000 }).toContain('AI: Hello caller.');
    // The caller speaks; the transcript cell gains the caller's line without a reload.
    const pcmu = createCodec(PCMU_8K);
    leg.feed(frames(tone(700, 8000, 500, 8000), 160).map((f) => pcmu.encode(f)));
    await expect.poll(() => row.innerText(), { timeout: 10_000 }).toContain('Caller: [utterance 1');
    // Live meter: the AI meter moves while the echo plays.
    await expect
      .poll(
        async () => row.locator('.meter.ai > span').evaluate((e) => parseFloat((e as HTMLElement).style.width) || 0),
        { timeout: 10_000 },
      )
      .toBeGreaterThan(10);
    await call.end({ by: 'remote', cause: 'bye' });
    const ended = page.locator(`#ended tr[data-call-id="${call.id}"]`);
    await ended.waitFor({ timeout: 10_000 });
    expect(await ended.innerText()).toContain('remote: bye');
    expect(await row.count()).toBe(0);
    expect(pageErrors).toEqual([]);
    expect(failed).toEqual([]);
    await page.screenshot({ path: 'test/output/dashboard.png' }).catch(() => undefined);
  });
});
