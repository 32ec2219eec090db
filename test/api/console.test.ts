import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sippCall, startSipHarness, type SipHarness, usePcapDir } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { TEST_TOKEN, waitFor } from '../support/gateway.js';
import { launchChromium, signInToConsole } from '../support/chromium.js';

const pcapDir = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1500)));

let h: SipHarness;
let browser: Browser;
let base: string;
beforeAll(async () => {
  h = await startSipHarness({ config: { api: { token: TEST_TOKEN } } });
  base = `http://127.0.0.1:${h.gw.httpPort}`;
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await h?.stop();
});

const signIn = (page: Page) => signInToConsole(page, base, TEST_TOKEN);

describe('ops console in headless Chromium against a sipp call', () => {
  it('an operator hangs up a live sipp call; history finds it; its detail page shows the SIP ladder in order', async () => {
    const page = await browser.newPage();
    await signIn(page);
    // sipp calls, plays audio and waits (10 s) for the gateway's BYE.
    const { call, sipp } = await sippCall(h, 'uac-gateway-bye.xml', join(pcapDir(), 'pcma-1000.pcap'));
    const row = page.locator(`#active tr[data-call-id="${call.id}"]`);
    await row.locator('text=bridged').waitFor({ timeout: 10_000 });
    await row.locator('button.hangup').click();
    const res = await sipp;
    expect(res.code, res.errors).toBe(0);
    expect(res.messages).toMatch(/BYE sip:sipp@127\.0\.0\.1:\d+ SIP\/2\.0/);
    await waitFor(() => call.ended, 5000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });

    // History: search by the caller's number (a part of it) and the outcome.
    await waitFor(() => !!h.gw.ctx.records.get(call.id), 5000, 'the call record');
    await page.goto(base + '/console/history.html');
    await page.fill('input[name=number]', call.info.from.slice(-6));
    await page.fill('input[name=outcome]', 'api_hangup');
    await page.click('#search button');
    const found = page.locator(`#results tr[data-call-id="${call.id}"]`);
    await found.waitFor({ timeout: 10_000 });
    expect(await found.innerText()).toContain('operator: api_hangup');
    // A search that matches nothing shows nothing.
    await page.fill('input[name=number]', '999999999');
    await page.click('#search button');
    await expect.poll(() => page.locator('#results tr[data-call-id]').count(), { timeout: 10_000 }).toBe(0);

    // Detail: the ladder has every SIP message of the call in order.
    await page.goto(`${base}/console/call.html?id=${encodeURIComponent(call.id)}`);
    await page.locator('#ladder tr.ladder-msg').first().waitFor({ timeout: 10_000 });
    const summaries = await page
      .locator('#ladder tr.ladder-msg')
      .evaluateAll((rows) =>
        rows.map((r) => `${r.className.includes('out') ? '>' : '<'} ${(r as HTMLElement).dataset.summary}`),
      );
    // The record waits for the 200 to our BYE, so the stored ladder ends with it.
    const order = ['< INVITE', '> 100 Trying (INVITE)', '> 200 OK (INVITE)', '< ACK', '> BYE', '< 200 OK (BYE)'];
    const at = order.map((m) => summaries.indexOf(m));
    expect(
      at.every((i) => i >= 0),
      summaries.join(', '),
    ).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(summaries[0]).toBe('< INVITE');
    await page.close();
  });

  it('without the session or token the console pages get no data', async () => {
    const page = await browser.newPage();
    await page.goto(base + '/console/history.html');
    await expect.poll(() => page.locator('#results').innerText(), { timeout: 10_000 }).toContain('sign in');
    expect(await page.locator('#results tr[data-call-id]').count()).toBe(0);
    expect((await fetch(base + '/v1/calls?ended=true')).status).toBe(401);
    await page.close();
  });
});
