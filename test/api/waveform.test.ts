import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { Gateway } from '../../src/gateway.js';
import { frames, tone } from '../support/audio.js';
import { launchChromium } from '../support/chromium.js';
import { simulatedCall, sleep, startTestGateway, TEST_TOKEN, waitFor } from '../support/gateway.js';

/**
 * The call detail's waveform player: the recording (stereo WAV, caller left / AI right) fetched
 * with the session cookie, decoded in the page and drawn on a canvas, caller lane over AI lane.
 */
let gw: Gateway;
let browser: Browser;
let base: string;
beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-wave-'));
  gw = await startTestGateway({ records: { path: ':memory:', recordAudio: true, recordingsDir: dir } });
  base = `http://127.0.0.1:${gw.httpPort}`;
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await gw?.stop('test_done', 0);
});

async function signedIn(): Promise<Page> {
  const page = await browser.newPage();
  const res = await page.request.post(base + '/v1/auth/session', {
    headers: { authorization: `Bearer ${TEST_TOKEN}` },
  });
  expect(res.ok()).toBe(true);
  return page;
}

/** Coloured (non-background) pixels in the top (caller) and bottom (AI) halves of the waveform canvas. */
const lanePixels = (page: Page) =>
  page.locator('canvas.waveform').evaluate((c: HTMLCanvasElement) => {
    const { width, height } = c;
    const px = c.getContext('2d')!.getImageData(0, 0, width, height).data;
    const counts = { caller: 0, ai: 0 };
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const i = (y * width + x) * 4;
        const [r, g, b] = [px[i]!, px[i + 1]!, px[i + 2]!];
        if (g > r + 40 && g > b)
          counts.caller++; // #2a9d5b
        else if (b > r + 60 && b > g + 40) counts.ai++; // #3a6fd8
        // (the playhead is red, the background near white: neither counts)
      }
    return counts;
  });

describe('waveform player on the call detail page', () => {
  it('draws the recorded call: the caller’s tone in the top lane, the AI’s greeting in the bottom one; a click seeks', async () => {
    const { call, leg } = await simulatedCall(gw);
    const pcmu = createCodec(PCMU_8K);
    await waitFor(() => call.media!.bridge.playout.empty && call.transcript.length > 0, 10_000, 'greeting');
    leg.feed(frames(tone(1000, 8000, 600, 8000), 160).map((f) => pcmu.encode(f)));
    await sleep(800);
    await call.end({ by: 'remote', cause: 'bye' });
    const path = join(gw.ctx.config.records.recordingsDir, `${call.id}.wav`);
    await waitFor(() => readFileSync(path).readUInt32LE(40) > 0, 5000, 'WAV finished');

    const page = await signedIn();
    page.on('console', (m) => m.type() === 'error' && console.log('[page]', m.text()));
    await page.goto(`${base}/console/call.html?id=${encodeURIComponent(call.id)}`);
    await expect
      .poll(() => page.evaluate(() => (window as unknown as { waveform?: string }).waveform), { timeout: 15_000 })
      .toBe('drawn');
    const before = await lanePixels(page);
    expect(before.caller).toBeGreaterThan(200);
    expect(before.ai).toBeGreaterThan(200);
    // A click in the middle seeks the player to about half the recording.
    const canvas = page.locator('canvas.waveform');
    const box = (await canvas.boundingBox())!;
    await canvas.click({ position: { x: box.width / 2, y: box.height / 2 } });
    const at = await page.evaluate(() => {
      const a = document.querySelector('#recording audio') as HTMLAudioElement;
      return { t: a.currentTime, d: a.duration };
    });
    expect(at.t).toBeGreaterThan(0);
    if (Number.isFinite(at.d)) expect(Math.abs(at.t / at.d - 0.5)).toBeLessThan(0.1);
    await page.close();
  });

  it('a call without a recording shows no player, and without the session the page gets no recording', async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/console/call.html?id=00000000-0000-4000-8000-000000000000`);
    await page.locator('#summary', { hasText: 'sign in' }).waitFor({ timeout: 10_000 });
    expect(await page.locator('canvas.waveform').count()).toBe(0);
    expect((await fetch(`${base}/v1/calls/00000000-0000-4000-8000-000000000000/recording`)).status).toBe(401);
    await page.close();
  });
});
