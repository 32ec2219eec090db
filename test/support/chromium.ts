import { chromium, type Browser } from 'playwright-core';

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
