import type { Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CallView } from '../../src/api/call-view.js';
import { launchChromium } from '../support/chromium.js';
import { waitFor } from '../support/gateway.js';
import { API_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';

/**
 * A WhatsApp call's detail: Meta's `calls` webhooks and our Graph requests, kept per call (bounded
 * with the SIP ladder by limits.maxSignallingMessages), stored in the record and drawn on the page.
 */
let h: Harness | undefined;
let browser: Browser;
beforeAll(async () => {
  browser = await launchChromium();
});
afterEach(async () => {
  await h?.stop();
  h = undefined;
});
afterAll(async () => {
  await browser?.close();
});

const summaries = (v: CallView) =>
  v.signalling.filter((m) => m.protocol === 'whatsapp').map((m) => `${m.direction} ${m.summary}`);

describe('WhatsApp events on the call detail', () => {
  it('webhook connect, Graph pre_accept and accept, webhook terminate: in order, in the record and on the page', async () => {
    h = await startHarness({ freqFor: () => 500 });
    const user = h.user('250788123777');
    await user.call();
    await waitFor(() => h!.gw.ctx.registry.list({ front: 'whatsapp', state: 'bridged' }).length === 1, 8000, 'bridged');
    const call = h.gw.ctx.registry.list({ front: 'whatsapp' })[0]!;
    expect(await user.hangup()).toBe(200);
    await waitFor(() => !!h!.gw.ctx.records.get(call.id), 5000, 'the call record');
    const view = h.gw.ctx.records.get(call.id)!;
    const got = summaries(view);
    const order = [
      /^in webhook connect \(offer\)$/,
      /^out Graph pre_accept → 200 \(\d+ ms\)$/,
      /^out Graph accept → 200 \(\d+ ms\)$/,
      /^in webhook terminate COMPLETED$/,
    ];
    expect(got, got.join(', ')).toHaveLength(order.length);
    order.forEach((re, i) => expect(got[i]).toMatch(re));
    // What was sent and received is there to read: the SDP answer in accept, Meta's call id in the webhooks.
    const accept = view.signalling.find((m) => m.summary.startsWith('Graph accept'))!;
    expect(accept.raw).toContain('"action":"accept"');
    expect(accept.raw).toContain('a=fingerprint:sha-256');
    expect(accept.raw).not.toContain(h.gw.ctx.config.whatsapp.accessToken);
    expect(view.signalling[0]!.raw).toContain(user.waCallId);

    // The detail page draws them in their own table, in the same order.
    const base = `http://127.0.0.1:${h.gw.httpPort}`;
    const page = await browser.newPage();
    const res = await page.request.post(base + '/v1/auth/session', {
      headers: { authorization: `Bearer ${API_TOKEN}` },
    });
    expect(res.ok()).toBe(true);
    await page.goto(`${base}/console/call.html?id=${encodeURIComponent(call.id)}`);
    await page.locator('#whatsapp tr.wa-msg').first().waitFor({ timeout: 10_000 });
    const rows = await page
      .locator('#whatsapp tr.wa-msg')
      .evaluateAll((trs) =>
        trs.map((r) => `${r.className.includes('out') ? 'out' : 'in'} ${(r as HTMLElement).dataset.summary}`),
      );
    expect(rows).toEqual(got);
    expect(await page.locator('#ladder tr.ladder-msg').count()).toBe(0);
    await page.close();
  });

  it('a Graph request Meta refuses is kept with its status and error body', async () => {
    h = await startHarness({ freqFor: () => 500 });
    h.graph.inject('pre_accept', { status: 400, code: 138006, message: 'Call not found (test)' });
    const user = h.user('250788123778');
    await user.postWebhook(user.connectWebhook(await user.createOffer()));
    await waitFor(() => h!.gw.ctx.records.list({ front: 'whatsapp' }).length === 1, 10_000, 'the call record');
    const view = h.gw.ctx.records.list({ front: 'whatsapp' })[0]!;
    const got = summaries(view);
    expect(got[0]).toBe('in webhook connect (offer)');
    expect(got[1], got.join(', ')).toMatch(/^out Graph pre_accept → 400 \(\d+ ms\)$/);
    const refused = view.signalling.find((m) => m.summary.startsWith('Graph pre_accept'))!;
    expect(refused.raw).toContain('Call not found (test)');
  });
});
