import { chromium, type Browser, type Page } from 'playwright-core';

/** Debian's chromium (installed by .ci/run); playwright never downloads a browser here. */
export const CHROMIUM = '/usr/bin/chromium';

/**
 * Headless Chromium as the tests run it: no background networking, updates or sync (on a closed
 * network those connections are refused by the dozen), plus `extra` flags (fake microphone...).
 */
export function launchChromium(extra: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extra,
    ],
  });
}

/** A fake microphone (granted without a prompt), optionally playing `wav` instead of Chromium's beep. */
export const fakeMicrophone = (wav?: string): string[] => [
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  ...(wav ? [`--use-file-for-fake-audio-capture=${wav}`] : []),
  '--autoplay-policy=no-user-gesture-required',
];

/** Open the console at `base` and sign in with the ops token, as an operator does; resolves once live. */
export async function signInToConsole(page: Page, base: string, token: string): Promise<void> {
  await page.goto(base + '/');
  await page.locator('#auth').waitFor({ state: 'visible', timeout: 10_000 });
  await page.fill('#token', token);
  await page.click('#auth button');
  await page.locator('#status', { hasText: 'live' }).waitFor({ timeout: 10_000 });
}
