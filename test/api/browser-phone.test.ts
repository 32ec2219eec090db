import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Call } from '../../src/core/call.js';
import { Gateway } from '../../src/gateway.js';
import { startBrowserGateway } from '../support/browser-gateway.js';
import { fakeMicrophone, launchChromium, signInToConsole } from '../support/chromium.js';
import { TEST_TOKEN, waitFor } from '../support/gateway.js';

const dir = mkdtempSync(join(tmpdir(), 'browser-phone-'));
/** The fake microphone: 700 Hz for 1 s, then 1.5 s of silence (an utterance the agent's VAD ends), looped. */
const MIC_WAV = join(dir, 'mic.wav');

let gw: Gateway;
let browser: Browser;
let base: string;
let stopGateway: (() => Promise<void>) | undefined;

beforeAll(async () => {
  execFileSync('sox', [
    '-n',
    '-r',
    '48000',
    '-c',
    '1',
    '-b',
    '16',
    MIC_WAV,
    'synth',
    '1',
    'sine',
    '700',
    'pad',
    '0',
    '1.5',
  ]);
  ({ gw, base, stop: stopGateway } = await startBrowserGateway({ token: TEST_TOKEN }));
  browser = await launchChromium(fakeMicrophone(MIC_WAV));
});
afterAll(async () => {
  await browser?.close();
  await stopGateway?.();
});

const nextBrowserCall = (): Promise<Call> =>
  new Promise((resolve) => {
    const on = (c: Call) => {
      if (c.info.front !== 'browser') return;
      gw.ctx.registry.off('created', on);
      resolve(c);
    };
    gw.ctx.registry.on('created', on);
  });

describe('browser phone (sip.js over SIP-over-WebSocket, WebRTC leg) in headless Chromium', () => {
  it('calls the local agent: hears the greeting, the agent hears the caller, hang-up from the page ends the call', async () => {
    const page = await browser.newPage();
    page.on('console', (m) => m.type() === 'error' && console.log('[page]', m.text()));
    await signInToConsole(page, base, TEST_TOKEN);
    const created = nextBrowserCall();
    await page.click('#phone-call');
    const call = await created;
    expect(call.info.front).toBe('browser');
    await page.locator('#phone-state', { hasText: 'Established' }).waitFor({ timeout: 20_000 });
    expect(call.route).toBe('local');
    // The greeting reaches the page: the AnalyserNode on the remote stream measures it.
    await expect
      .poll(
        () =>
          page.evaluate(
            () => (window as unknown as { phone: { levels: { remoteMax: number } } }).phone.levels.remoteMax,
          ),
        {
          timeout: 15_000,
        },
      )
      .toBeGreaterThan(0.02);
    // The agent hears the fake microphone: the caller's utterances land in the transcript.
    await waitFor(() => call.transcript.some((t) => t.role === 'caller'), 20_000, 'a caller utterance');
    // The console lists the call with its front.
    await page.locator(`#active tr[data-call-id="${call.id}"]`, { hasText: 'browser' }).waitFor({ timeout: 10_000 });
    await page.click('#phone-hangup');
    await waitFor(() => call.ended, 10_000, 'the call to end');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    await page.locator('#phone-state', { hasText: 'Terminated' }).waitFor({ timeout: 10_000 });
    const record = gw.ctx.records.get(call.id);
    expect(record?.front).toBe('browser');
    expect(record?.transcript.some((t: { role: string }) => t.role === 'caller')).toBe(true);
    await page.close();
  });

  it('without the token a browser gets nothing: no session, no SIP call, no cross-site WebSocket', async () => {
    // REST without the token.
    expect((await fetch(base + '/v1/routes')).status).toBe(401);
    // A cross-site page cannot open the SIP WebSocket through a visitor's browser.
    const evil = new WebSocket(`ws://127.0.0.1:${gw.httpPort}/sip`, 'sip', { origin: 'http://evil.example' });
    const refused = await new Promise<number>((resolve) => {
      evil.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      evil.on('open', () => resolve(101));
    });
    expect(refused).toBe(403);
    // Not a SIP client (no `sip` subprotocol): refused.
    const plain = new WebSocket(`ws://127.0.0.1:${gw.httpPort}/sip`);
    const status = await new Promise<number>((resolve) => {
      plain.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      plain.on('open', () => resolve(101));
    });
    expect(status).toBe(400);
    // A SIP client without credentials: 401 with a digest challenge, and no call is created.
    const before = gw.ctx.registry.size;
    const ws = new WebSocket(`ws://127.0.0.1:${gw.httpPort}/sip`, 'sip');
    await new Promise((r) => ws.once('open', r));
    const invite = [
      'INVITE sip:local@127.0.0.1 SIP/2.0',
      'Via: SIP/2.0/WS abc.invalid;branch=z9hG4bK-nocreds-1',
      'Max-Forwards: 70',
      'From: <sip:ops@127.0.0.1>;tag=t1',
      'To: <sip:local@127.0.0.1>',
      'Call-ID: nocreds-1@abc.invalid',
      'CSeq: 1 INVITE',
      'Contact: <sip:x@abc.invalid;transport=ws>',
      'Content-Type: application/sdp',
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n');
    const reply = new Promise<string>((resolve) =>
      ws.on('message', (d: Buffer) => {
        const text = d.toString();
        if (!text.startsWith('SIP/2.0 100')) resolve(text);
      }),
    );
    ws.send(invite);
    const res = await reply;
    expect(res).toMatch(/^SIP\/2\.0 401 /);
    expect(res).toMatch(/WWW-Authenticate: Digest realm="voice-gateway"/i);
    expect(gw.ctx.registry.size).toBe(before);
    ws.close();
  });
});
