import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SystemSeries } from '../../src/api/system-series.js';
import type { Gateway } from '../../src/gateway.js';
import { api, simulatedCall, startTestGateway, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { launchChromium, signInToConsole } from '../support/chromium.js';

let gw: Gateway;
let browser: Browser;
beforeAll(async () => {
  gw = await startTestGateway({ api: { token: TEST_TOKEN, systemSampleMs: 100, systemSamples: 30 } });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await gw?.stop('test_done', 0);
});

const series = async () => (await api(gw)('GET', '/v1/system/series')).body as unknown as SystemSeries;
/** Polls an async condition (event-synchronised by the sampler's own ticks, generous deadline). */
async function until(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('system page: the gateway’s own figures over time', () => {
  it('counts calls per front/trunk/route while they live, within a bounded history; needs auth', async () => {
    expect((await api(gw, null)('GET', '/v1/system/series')).status).toBe(401);
    const { call } = await simulatedCall(gw, { trunk: 'mtn-rwanda' });
    await waitFor(() => call.route !== undefined, 5000, 'the call routed');
    let s = await series();
    await until(
      async () => {
        s = await series();
        return (s.calls['route:local'] ?? []).includes(1);
      },
      10_000,
      'a sample with the call',
    );
    expect(s.calls['front:test']).toContain(1);
    expect(s.calls['trunk:mtn-rwanda']).toContain(1);
    // Column-wise and aligned: every series has one value per sample time.
    for (const col of [s.cpu, s.rssMb, s.heapMb, s.lateRatio, ...Object.values(s.calls)])
      expect(col).toHaveLength(s.t.length);
    expect(Math.max(...s.rssMb)).toBeGreaterThan(10);
    for (const r of s.lateRatio) expect(r >= 0 && r <= 1).toBe(true);
    await call.end({ by: 'gateway', cause: 'test' });
    await until(
      async () => {
        s = await series();
        return s.calls['route:local']?.at(-1) === 0;
      },
      10_000,
      'a sample after the call',
    );
    // Bounded: never more than systemSamples, however long it runs.
    await until(async () => (await series()).t.length === 30, 20_000, 'the ring to fill');
    await new Promise((r) => setTimeout(r, 300));
    expect((await series()).t.length).toBe(30);
  });

  it('renders its uPlot charts with data in headless Chromium after a call', async () => {
    const { call } = await simulatedCall(gw, { trunk: 'go-malta' });
    await until(
      async () => ((await series()).calls['trunk:go-malta'] ?? []).includes(1),
      10_000,
      'a sample with the call',
    );
    await waitFor(
      () => call.qualityOverTime.length >= 3 && call.qualityOverTime.some((q) => q.aiDb > -120),
      15_000,
      'quality samples with the greeting',
    );
    await call.end({ by: 'gateway', cause: 'test' });
    const page = await browser.newPage();
    const base = `http://127.0.0.1:${gw.httpPort}`;
    await signInToConsole(page, base, TEST_TOKEN);
    await page.click('a[href="/console/system.html"]');
    await page.locator('#status', { hasText: 'samples' }).waitFor({ timeout: 10_000 });
    const charts = await page.evaluate(
      () => (window as unknown as { systemCharts: Record<string, { labels: string[]; points: number }> }).systemCharts,
    );
    expect(Object.keys(charts).sort()).toEqual(['calls', 'cpu', 'late', 'memory']);
    expect(charts.calls!.labels).toEqual(expect.arrayContaining(['front:test', 'trunk:go-malta', 'route:local']));
    for (const c of Object.values(charts)) expect(c.points).toBeGreaterThan(1);
    // uPlot drew them: one canvas per chart.
    expect(await page.locator('.uplot canvas').count()).toBe(4);
    // The call page charts the call's quality over time (kept in its record once ended).
    await page.goto(`${base}/console/call.html?id=${call.id}`);
    await page.locator('#quality-chart .uplot canvas').waitFor({ timeout: 10_000 });
    expect(await page.locator('#levels-chart .uplot canvas').count()).toBe(1);
    const points = await page.evaluate(() => (window as unknown as { qualityPoints: number }).qualityPoints);
    expect(points).toBe(call.qualityOverTime.length);
    expect(points).toBeGreaterThanOrEqual(3);
    // The AI's greeting is on the levels series, and the samples survive into the record.
    expect(gw.ctx.records.get(call.id)?.qualityOverTime).toHaveLength(points);
    await page.close();
  });
});
