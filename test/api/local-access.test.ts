import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isLoopback } from '../../src/api/local-access.js';
import type { Call } from '../../src/core/call.js';
import type { Gateway } from '../../src/gateway.js';
import { startBrowserGateway } from '../support/browser-gateway.js';
import { fakeMicrophone, launchChromium } from '../support/chromium.js';

// `npm start` with no API_TOKEN: a generated token and a one-time login link, loopback peers only.
let gw: Gateway;
let base: string;
let stopGateway: (() => Promise<void>) | undefined;
beforeAll(async () => {
  ({ gw, base, stop: stopGateway } = await startBrowserGateway({ httpHost: '0.0.0.0' }));
  expect(gw.ctx.localAccess, 'no token configured: a generated one, loopback only').toBeDefined();
});
afterAll(() => stopGateway?.());

const login = (code: unknown, from = base) =>
  fetch(from + '/v1/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code }),
  });

describe('no API_TOKEN: local access by one-time login link', () => {
  it('the printed URL carries a login code in the fragment; it buys a session and the token exactly once', async () => {
    const url = new URL(gw.consoleUrl);
    expect(url.pathname).toBe('/');
    const code = new URLSearchParams(url.hash.slice(1)).get('login');
    expect(code).toMatch(/^[A-Za-z0-9_-]{24}$/);
    // Without credentials: 401, not an open API.
    expect((await fetch(base + '/v1/calls')).status).toBe(401);
    // Hostile codes: oversized (refused before parsing), wrong, not a string.
    expect((await login('y'.repeat(10_000))).status).toBe(413);
    for (const bad of ['x'.repeat(24), 'z'.repeat(65), 42, null]) {
      const r = await login(bad);
      expect(r.status, String(bad).slice(0, 10)).toBe(401);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    }
    const ok = await login(code);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('set-cookie')).toMatch(/^gw_ops=[^;]+; Path=\/v1; HttpOnly; SameSite=Strict/);
    const { token } = (await ok.json()) as { token: string };
    expect(token.length).toBeGreaterThanOrEqual(43);
    // Replayed: dead.
    expect((await login(code)).status).toBe(401);
    // The token works as a configured one would; the cookie authorises reads.
    const calls = await fetch(base + '/v1/calls', { headers: { authorization: `Bearer ${token}` } });
    expect(calls.status).toBe(200);
    const cookie = ok.headers.get('set-cookie')!.split(';')[0]!;
    expect((await fetch(base + '/v1/routes', { headers: { cookie } })).status).toBe(200);
  });

  it('from another host the API is disabled even on a 0.0.0.0 listener: 503, no login, no WebSocket upgrade', async () => {
    const lan = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal && !isLoopback(i.address));
    // A machine with no LAN address cannot play "another host"; isLoopback's own cases still run.
    expect(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('::ffff:127.0.0.2')).toBe(true);
    expect(isLoopback('10.0.0.1') || isLoopback('::ffff:192.168.1.1') || isLoopback(undefined)).toBe(false);
    if (!lan) return;
    const remote = `http://${lan.address}:${gw.httpPort}`;
    const r = await fetch(remote + '/v1/calls');
    expect(r.status).toBe(503);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('api_disabled');
    expect((await login(new URLSearchParams(new URL(gw.consoleUrl).hash.slice(1)).get('login'), remote)).status).toBe(
      404,
    );
    const upgrade = await fetch(remote + '/sip', { headers: { connection: 'Upgrade', upgrade: 'websocket' } }).catch(
      () => null,
    );
    expect(upgrade?.status ?? 403).not.toBe(101);
  });
});

describe('no API_TOKEN: open the printed URL and press Call (headless Chromium)', () => {
  it('the login link signs the console in; the phone reaches the local agent and hangs up', async () => {
    const { gw: fresh, stop } = await startBrowserGateway({ greeting: 'Hello caller.', maxCalls: 1 });
    const browser = await launchChromium(fakeMicrophone());
    try {
      const page = await browser.newPage();
      const created = new Promise<Call>((resolve) => fresh.ctx.registry.once('created', resolve));
      await page.goto(fresh.consoleUrl.replace('localhost', '127.0.0.1'));
      await page.locator('#status', { hasText: 'live' }).waitFor({ timeout: 10_000 });
      // The code is gone from the address bar (and so from history).
      expect(page.url()).not.toContain('login=');
      await page.click('#phone-call');
      const call = await created;
      expect(call.info.front).toBe('browser');
      await page.locator('#phone-state', { hasText: 'Established' }).waitFor({ timeout: 20_000 });
      expect(call.route).toBe('local');
      // The greeting reaches the page (AnalyserNode on the remote stream).
      const remoteMax = () =>
        page.evaluate(() => (window as unknown as { phone: { levels: { remoteMax: number } } }).phone.levels.remoteMax);
      await expect.poll(remoteMax, { timeout: 15_000 }).toBeGreaterThan(0.02);
      await page.click('#phone-hangup');
      await expect.poll(() => call.ended, { timeout: 10_000 }).toBe(true);
      expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    } finally {
      await browser.close();
      await stop();
    }
  });
});
