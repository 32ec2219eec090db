/**
 * Regenerates the console screenshots in docs/ (README shows them): a real gateway with the SIP
 * front, one live sipp call and one ended call, photographed by headless Chromium. A vitest file
 * (it reuses the SIP test harness), skipped unless asked for:
 *   SCREENSHOTS=1 npx vitest run test/docs/screenshots.test.ts
 */
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { nextCall, runSipp, SIPP_NUMS, sippTarget, startSipHarness, usePcapDir } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { TEST_TOKEN, waitFor } from '../support/gateway.js';
import { launchChromium } from '../support/chromium.js';

const pcapDir = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1500)));
const OUT = join(import.meta.dirname, '../../docs');

async function main(): Promise<void> {
  const h = await startSipHarness({ config: { api: { token: TEST_TOKEN } } });
  const base = `http://127.0.0.1:${h.gw.httpPort}`;
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(base + '/');
    await page.fill('#token', TEST_TOKEN);
    await page.click('#auth button');
    await page.locator('#status', { hasText: 'live' }).waitFor();
    const sipp = (n: number) =>
      runSipp({
        scenario: 'uac-gateway-bye.xml',
        target: sippTarget(h),
        vars: { ...SIPP_NUMS, FROM: `07881234${n}`, PCAP: join(pcapDir(), 'pcma-1000.pcap') },
      });
    // One call ended by the operator (history, detail), one live (dashboard).
    let created = nextCall(h);
    const first = sipp(10);
    const ended = await created;
    await waitFor(() => ended.state === 'bridged', 10_000, 'bridged');
    await h.gw.ctx.registry.get(ended.id)?.end({ by: 'operator', cause: 'api_hangup' });
    await first;
    created = nextCall(h);
    const second = sipp(20);
    const live = await created;
    await waitFor(() => live.state === 'bridged', 10_000, 'bridged');
    await page.locator(`#active tr[data-call-id="${live.id}"]`).waitFor();
    await page.waitForTimeout(1500); // levels and transcript settle
    await page.screenshot({ path: join(OUT, 'console-live.png'), fullPage: true });
    await waitFor(() => !!h.gw.ctx.records.get(ended.id), 5000, 'record');
    await page.goto(base + '/console/history.html');
    await page.locator('#results tr[data-call-id]').first().waitFor();
    await page.screenshot({ path: join(OUT, 'console-history.png'), fullPage: true });
    await page.goto(`${base}/console/call.html?id=${ended.id}`);
    await page.locator('#ladder tr.ladder-msg').first().waitFor();
    await page.screenshot({ path: join(OUT, 'console-call.png'), fullPage: true });
    await live.end({ by: 'operator', cause: 'api_hangup' });
    await second;
  } finally {
    await browser.close();
    await h.stop();
  }
}

describe.runIf(process.env.SCREENSHOTS === '1')('console screenshots', () => {
  it('writes docs/console-live.png, console-history.png, console-call.png', main, 120_000);
});
