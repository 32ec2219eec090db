/**
 * Regenerates the console screenshots in docs/ (README shows them): a real gateway with the SIP
 * front, the browser phone and recording on, one live sipp call and one ended (recorded) call,
 * the system page and the browser phone in a call, photographed by headless Chromium. A vitest
 * file (it reuses the SIP test harness), skipped unless asked for:
 *   SCREENSHOTS=1 npx vitest run test/docs/screenshots.test.ts
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { nextCall, runSipp, SIPP_NUMS, sippTarget, startSipHarness, usePcapDir } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { TEST_TOKEN, waitFor } from '../support/gateway.js';
import { fakeMicrophone, launchChromium } from '../support/chromium.js';
import { leasePortRange, releasePortRange } from '../support/ports.js';

const pcapDir = usePcapDir((dir) => writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 1500)));
const OUT = join(import.meta.dirname, '../../docs');

async function main(): Promise<void> {
  const range = leasePortRange(100);
  const h = await startSipHarness({
    config: {
      api: { token: TEST_TOKEN, systemSampleMs: 250 },
      records: { path: ':memory:', recordAudio: true, recordingsDir: mkdtempSync(join(tmpdir(), 'gw-shots-')) },
      browser: { publicIp: '127.0.0.1', udpPortMin: range[0], udpPortMax: range[0] + 99 },
    },
  });
  const base = `http://127.0.0.1:${h.gw.httpPort}`;
  const browser = await launchChromium(fakeMicrophone());
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
    await page.waitForTimeout(3000); // a few seconds of both tones to record and chart
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
    await page.waitForFunction(() => (window as unknown as { waveform?: string }).waveform === 'drawn');
    await page.screenshot({ path: join(OUT, 'console-call.png'), fullPage: true });
    await page.goto(base + '/console/system.html');
    await page.locator('#status', { hasText: 'samples' }).waitFor();
    await page.screenshot({ path: join(OUT, 'console-system.png'), fullPage: true });
    await live.end({ by: 'operator', cause: 'api_hangup' });
    await second;
    // The browser phone in a call to the (tone) AI: the Call panel with its live levels.
    await page.goto(base + '/');
    await page.locator('#status', { hasText: 'live' }).waitFor();
    await page.click('#phone-call'); // the token lived in the page's memory only: asked again
    await page.fill('#phone-token', TEST_TOKEN);
    await page.click('#phone-call');
    await page.locator('#phone-state', { hasText: 'Established' }).waitFor({ timeout: 20_000 });
    await page.waitForTimeout(1500); // meters and the live row settle
    await page.screenshot({ path: join(OUT, 'console-phone.png'), fullPage: true });
    await page.click('#phone-hangup');
    await page.locator('#phone-state', { hasText: 'Terminated' }).waitFor();
  } finally {
    await browser.close();
    await h.stop();
    releasePortRange(range);
  }
}

describe.runIf(process.env.SCREENSHOTS === '1')('console screenshots', () => {
  it('writes docs/console-{live,history,call,system,phone}.png', main, 120_000);
});
